# syntax=docker/dockerfile:1
# One image for every marketdata process; the argument selects it:
#   docker run IMAGE ingest | aggregator | query | edge | feeder | migrate [--wait SECONDS]
# Stages: web (Node builds the dashboard) -> build (a virtual environment with the package and its
# dependencies) -> runtime (slim Python, non-root, no compilers; the last stage, the default target).
# `dev` (used by Tilt) adds a restart wrapper and a writable copy of services/ for live update.

ARG PYTHON_VERSION=3.11
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (a layer that only changes with pyproject.toml): install the project with a
# placeholder package, then drop it; the real sources follow.
COPY pyproject.toml README.md ./
RUN mkdir -p services/marketdata \
    && touch services/marketdata/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes marketdata \
    && rm -rf services build
COPY services/ services/
RUN pip install --no-cache-dir --no-deps . \
    && python -m compileall -q /opt/venv/lib

FROM python:${PYTHON_VERSION}-slim-bookworm AS base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MIGRATIONS_DIR=/app/migrations \
    WEB_DIST_DIR=/app/web/dist \
    BIND_HOST=0.0.0.0 \
    METRICS_PORT=9090
RUN groupadd --system --gid 10001 marketdata \
    && useradd --system --uid 10001 --gid marketdata --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin marketdata
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY migrations/ /app/migrations/
COPY --from=web /src/web/dist /app/web/dist
EXPOSE 50051 50052 50053 8080 9090

# Development image for Tilt: services/ is importable from /app/services (ahead of the installed
# copy) and owned by the app user, so live update can sync into it; the process runs under a
# restart wrapper (a few lines of sh): it runs `marketdata "$@"` and restarts it whenever the
# content of /tmp/.restart changes, which Tilt's live update does after syncing files.
FROM base AS dev
ENV PYTHONPATH=/app/services
COPY --chown=10001:10001 services/ /app/services/
USER 10001:10001
ENTRYPOINT ["/bin/sh", "-c", "t=/tmp/.restart; [ -f $t ] || : > $t; trap 'kill -TERM $c 2>/dev/null; wait $c; exit 0' TERM INT; while :; do s=$(cat $t); marketdata \"$@\" & c=$!; while kill -0 $c 2>/dev/null && [ \"$(cat $t)\" = \"$s\" ]; do sleep 1; done; kill -TERM $c 2>/dev/null; wait $c; sleep 1; echo \"restart-on-change: marketdata $*\" >&2; done", "restart-on-change"]
CMD ["edge"]

FROM base AS runtime
USER 10001:10001
ENTRYPOINT ["marketdata"]
CMD ["edge"]
