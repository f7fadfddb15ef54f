"""Kafka plumbing: clients, the embedded broker, publishing, control, history, checkpoints."""
