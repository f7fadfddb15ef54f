# The feedback-loop CLI in a container. The entrypoint is the CLI itself, so the command is a
# sub-command: `docker run IMAGE consume`, `docker run IMAGE simulate --events 1000 --seed 42`.
# Point it at a cluster with KAFKA_BOOTSTRAP_SERVERS (docker-compose.yml does); checkpoints
# (model state + offsets) go to the /state volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, in their own layer, so that editing the code does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(*deps, sep='\n')" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the package itself (only what it ships: tests, dashboards and deploy files stay out).
COPY README.md ./
COPY stream ./stream
COPY consumers ./consumers
COPY producers ./producers
COPY cli ./cli
RUN pip install --no-deps . \
    && cd / && rm -rf /src

# An unprivileged user that owns the checkpoint directory and the model registry.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
    && mkdir -p /state /registry \
    && chown app:app /state /registry

# Inside a container the metrics endpoint must listen on every interface to be scraped.
ENV FEEDBACK_LOOP_CONSUMER__STATE_DIR=/state \
    FEEDBACK_LOOP_RETRAIN__REGISTRY_DIR=/registry \
    FEEDBACK_LOOP_METRICS__HOST=0.0.0.0

VOLUME ["/state", "/registry"]
WORKDIR /home/app
USER app
# 9108: the consumer's /metrics; 8000: `feedback-loop serve`.
EXPOSE 9108 8000

ENTRYPOINT ["feedback-loop"]
CMD ["--help"]
