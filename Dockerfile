# The ccapo image: the library, the scoring server and the client.
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
COPY clients clients
COPY examples examples
RUN pip install ".[server]" ./clients/python

VOLUME /cache
EXPOSE 8000
CMD ["ccapo", "serve"]
