# redserve image. Build on any machine with Docker:
#   docker build -t redserve:0.1.0 .                                   # CPU
#   docker build -t redserve:0.1.0-cuda --build-arg VARIANT=cuda .     # + onnxruntime's CUDA provider
# Run: docker run -p 8080:8080 redserve:0.1.0   (serves models/fmnist-baseline; -e REDSERVE_MODEL=/app/models/<name>)
#      docker run --gpus all -e REDSERVE_DEVICE=cuda -p 8080:8080 redserve:0.1.0-cuda
# Port 9464 serves Prometheus /metrics, bound to 0.0.0.0 in the image (REDSERVE_METRICS_HOST) so that
# Prometheus can scrape the container: publish it only to your monitoring network.
# Another Node.js 20 base (same layout: node in /usr/local/bin, a user node with uid 1000):
#   --build-arg NODE_IMAGE=<image>   (scripts/containers.sh builds with one made from Debian packages)

ARG NODE_IMAGE=node:20-bookworm-slim
# onnxruntime-node's CUDA provider needs the CUDA 12 runtime libraries and cuDNN 9 beside the driver.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG VARIANT=cpu

# --- build: install all dependencies and compile TypeScript ---------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
# Only the service: the tests and benchmarks import the attack client, which is not in the image.
COPY src ./src
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

# --- dependencies per variant: cuda adds the CUDA execution provider libraries ---------------
FROM build AS deps-cpu

FROM build AS deps-cuda
# Downloaded at build time (needs network access); .npmrc skips this for every other install.
RUN cd node_modules/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL=cuda12 node ./script/install

FROM deps-${VARIANT} AS deps

# --- runtime base per variant ------------------------------------------------------------------
FROM ${NODE_IMAGE} AS base-cpu

FROM ${CUDA_IMAGE} AS base-cuda
# The same Node.js binary as the build stage, and a non-root user named node (uid 1000) as in the
# Node.js images (Ubuntu's images ship a user 'ubuntu' with that uid).
COPY --from=build /usr/local/bin/node /usr/local/bin/node
RUN (userdel --remove ubuntu 2>/dev/null || true) \
 && groupadd --gid 1000 node && useradd --uid 1000 --gid node --create-home --shell /bin/sh node

# --- runtime: production dependencies, compiled code and model packages, as a non-root user -
FROM base-${VARIANT} AS runtime
ENV NODE_ENV=production \
    PORT=8080 \
    HOST=0.0.0.0 \
    REDSERVE_METRICS_PORT=9464 \
    REDSERVE_METRICS_HOST=0.0.0.0 \
    REDSERVE_MODEL=/app/models/fmnist-baseline \
    REDSERVE_DEVICE=auto \
    ORT_DISABLE_TELEMETRY=1
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json openapi.yaml ./
# The package format the service validates manifests against (read at start-up).
COPY docs/model-format.schema.json ./docs/
# The gRPC service's messages (read at start-up, whether or not --grpc-port is set).
COPY proto ./proto
COPY models ./models
USER node
EXPOSE 8080 9464
# SIGTERM drains: in-flight requests finish (up to REDSERVE_DRAIN_TIMEOUT_MS), then exit 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "dist/src/server.js"]
