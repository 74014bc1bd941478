# syntax=docker/dockerfile:1
# The order processor (`python -m order_processor`). Build from the repository root:
#   docker build -f services/processor.Dockerfile -t order-pipeline/processor .
# The base image is a build argument (a mirror, a pinned digest, a hardened image). The build
# stage needs pip; BUILD_BASE_IMAGE names a base that has it when BASE_IMAGE has not (`make
# images` builds on a Debian base without pip, docs/images.md). Both default to the same image.
ARG BASE_IMAGE=python:3.11-slim
ARG BUILD_BASE_IMAGE=${BASE_IMAGE}

FROM ${BUILD_BASE_IMAGE} AS build
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Dependencies first, from the hashed runtime lock alone (`make lock` writes it beside the dev
# lock): this layer is reused until the lock changes.
COPY requirements-runtime.lock /tmp/runtime.lock

# A venv without pip: the base image's pip installs into it and stays behind in this stage.
# Compiled here (the running root filesystem is read-only), so a source change reuses it.
RUN python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes --no-deps \
        -r /tmp/runtime.lock \
    && python -m compileall -q /opt/venv
# Only this component's packages, compiled like the dependencies.
COPY services/order_common /app/order_common
COPY services/order_processor /app/order_processor
RUN python -m compileall -q /app

FROM ${BASE_IMAGE}
# The dependencies first: the same layer in all three images, stored once on a node.
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9100
COPY --from=build /app /app
# A numeric user, so `runAsNonRoot` can verify it without a passwd lookup.
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["python", "-m", "order_processor"]
