# The mediastream server image. Build from the repository root:
#
#   docker build -t mediastream .                        # the server and the built-in echo bot
#   docker build -t mediastream --build-arg EXTRAS=bot,cluster --build-arg BOT=bot.parrot .
#
# EXTRAS: the project's optional extras installed with it, comma-separated: "bot" (Pipecat
#   and the voice agent's services: a much larger image), "cluster" (Redis shared state,
#   MEDIASTREAM_REDIS_URL). Empty: the server with no extras.
# BOT: the default bot SPEC (MEDIASTREAM_BOT). "echo" needs no extra; bot.parrot and
#   bot.voice_agent need EXTRAS to include bot. Your own bot: build FROM this image and COPY
#   it in (README, "Deployment").
#
# Settings are MEDIASTREAM_* environment variables (mediastream.config), not flags, so the
# health check below reads the same port and TLS settings the server does. The server
# binds 0.0.0.0:8765 in the container. SIGTERM starts the graceful drain
# (MEDIASTREAM_DRAIN_TIMEOUT, default 30 s); the orchestrator's grace period must exceed it.

ARG PYTHON_VERSION=3.11

# ---- build: a virtualenv holding the project and the chosen extras -------------------
FROM python:${PYTHON_VERSION}-slim AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mediastream/ mediastream/
COPY audiocodecs/ audiocodecs/
COPY bot/ bot/
RUN python -m venv /opt/mediastream \
 && /opt/mediastream/bin/pip install --no-cache-dir ".${EXTRAS:+[${EXTRAS}]}"

# ---- runtime: the same Python, the virtualenv, a user without privileges --------------
FROM python:${PYTHON_VERSION}-slim AS runtime
ARG BOT=echo
RUN groupadd --gid 10001 mediastream \
 && useradd --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin mediastream
COPY --from=build /opt/mediastream /opt/mediastream
ENV PATH=/opt/mediastream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MEDIASTREAM_HOST=0.0.0.0 \
    MEDIASTREAM_PORT=8765 \
    MEDIASTREAM_BOT=${BOT}
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8765
# Standard library only (no curl in slim images): GET /healthz on MEDIASTREAM_PORT,
# unhealthy on 503 (draining), a refused connection or a timeout.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-m", "mediastream.healthcheck"]
STOPSIGNAL SIGTERM
# Exec form: the server is PID 1 and receives SIGTERM itself (no shell in between).
ENTRYPOINT ["mediastream", "serve"]
CMD ["--log-level", "INFO"]
