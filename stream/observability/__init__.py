"""Observability: Prometheus metrics, logs, and the status of a running consumer."""
