# redserve image. Build on any machine with Docker:
#   docker build -t redserve .                          # CPU
#   docker build -t redserve:cuda --build-arg VARIANT=cuda .   # + onnxruntime CUDA provider
# Run: docker run -p 8080:8080 redserve   (serves models/fmnist-red; -e REDSERVE_MODEL=/app/models/<name>)

ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: install all dependencies and compile TypeScript ---------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bench ./bench
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

# --- runtime: production dependencies, compiled code and model packages, as a non-root user -
FROM ${NODE_IMAGE} AS runtime
# VARIANT=cuda runs onnxruntime-node's installer for the CUDA 12 execution provider libraries
# (downloaded at build time; needs network access). The host needs the NVIDIA container toolkit,
# and the container is started with --gpus all and REDSERVE_DEVICE=cuda.
ARG VARIANT=cpu
ENV NODE_ENV=production \
    PORT=8080 \
    HOST=0.0.0.0 \
    REDSERVE_MODEL=/app/models/fmnist-red \
    REDSERVE_DEVICE=auto
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json openapi.yaml ./
COPY models ./models
RUN if [ "$VARIANT" = "cuda" ]; then \
      cd node_modules/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL=cuda12 node ./script/install; \
    fi
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "dist/src/server.js"]
