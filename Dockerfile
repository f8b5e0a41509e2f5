# One image for every marketdata process; the argument selects it:
#   docker run IMAGE ingest | aggregator | query | edge | feeder | migrate [--wait SECONDS]
# Stages: web (Node builds the dashboard) -> build (a virtual environment with the package and its
# dependencies) -> runtime (slim Python, non-root, no compilers; the last stage, the default target).
# `dev` (used by Tilt) adds a restart wrapper and a writable copy of services/ for live update.
#
# The base images are build arguments, so the same file builds where the official images cannot be
# pulled (e.g. with locally built stand-ins of the same Debian release and Python version):
#   docker build --build-arg PYTHON_IMAGE=my/python:3.11-slim-bookworm --build-arg NODE_IMAGE=my/node:20 .
# No `# syntax=` line: BuildKit would have to pull its frontend image, which an offline machine cannot.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM ${PYTHON_IMAGE} AS build
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

FROM ${PYTHON_IMAGE} AS base
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
# copy) and owned by the app user, so live update can sync into it. The process runs under
# docker/restart-on-change, which restarts it when /tmp/.restart changes (Tilt's live update writes
# it after a sync) and otherwise exits with the process's own exit code, so a Job (the migration)
# completes and a crash is a container restart, as with the runtime image.
FROM base AS dev
ENV PYTHONPATH=/app/services
COPY docker/restart-on-change /usr/local/bin/restart-on-change
COPY --chown=10001:10001 services/ /app/services/
USER 10001:10001
ENTRYPOINT ["restart-on-change"]
CMD ["edge"]

FROM base AS runtime
USER 10001:10001
ENTRYPOINT ["marketdata"]
CMD ["edge"]
