# The ccapo image: the library, the scoring server, the trainer, the Python client and the RL
# adapters, with the extras they need at run time (server; train and lora for `ccapo train`).
# tests/deploy/test_dockerfile.py replays the COPY and RUN steps in a fresh virtualenv.
# GPU hosts: the default `torch` from PyPI is a CUDA build; override with --build-arg TORCH=... .
FROM python:3.11-slim

ARG TORCH=torch
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    CCAPO_CACHE=/cache \
    CCAPO_HOST=0.0.0.0 \
    CCAPO_PORT=8000

WORKDIR /app
RUN pip install "${TORCH}"
COPY pyproject.toml README.md ./
COPY ccapo ccapo
COPY server server
COPY trainer trainer
COPY clients clients
COPY configs configs
COPY examples examples
RUN pip install ".[server,train,lora]" ./clients/python ./clients/adapters

VOLUME /cache
EXPOSE 8000
CMD ["ccapo", "serve"]
