#!/usr/bin/env bash
# GPU check: serve a ResNet-18 x 8 benchmark package on the CUDA execution provider and measure it.
#
#   bash scripts/gpu-check.sh          (after scripts/setup.sh; needs an NVIDIA GPU)
#
# 1. an NVIDIA GPU (nvidia-smi);
# 2. onnxruntime-node's CUDA 12 provider in node_modules (installed from api.nuget.org when absent,
#    as the Dockerfile's cuda variant does), and every library it links (CUDA 12, cuDNN 9) found;
# 3. the service and scripts/gpu-check.ts built; the benchmark package written (redtrain
#    bench-package, random weights; kept between runs);
# 4. CUDA against CPU logits on the package's golden inputs, twice: with TF32 as onnxruntime's CUDA
#    provider sets it (on) and with NVIDIA_TF32_OVERRIDE=0; raw member latency on both providers;
# 5. the service started with --device cuda (TF32 off when TF32 misses the package's golden.atol,
#    which the service checks at load), then /classify latency over HTTP.
# Any missing piece stops the script with "gpu-check: FAIL: ..." and a non-zero status.
#
# Environment: GPU_CHECK_DIR (work folder, default $TMPDIR/redserve-gpu-check), GPU_CHECK_REQUESTS
# (timed runs and requests, default 200), GPU_CHECK_PORT (default 18080), CUDA_DEVICE (default 0),
# PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "gpu-check: FAIL: $*" >&2
  exit 1
}
step() { echo "== $*"; }

WORK=${GPU_CHECK_DIR:-${TMPDIR:-/tmp}/redserve-gpu-check}
REQUESTS=${GPU_CHECK_REQUESTS:-200}
PORT=${GPU_CHECK_PORT:-18080}
DEVICE_ID=${CUDA_DEVICE:-0}
PYTHON=${PYTHON:-.venv/bin/python}
PKG=$WORK/bench-resnet18x8
ORT_BIN=node_modules/onnxruntime-node/bin/napi-v6/linux/x64
CUDA_EP=$ORT_BIN/libonnxruntime_providers_cuda.so

step "1. NVIDIA GPU"
command -v nvidia-smi >/dev/null 2>&1 || fail "nvidia-smi not found: this machine has no NVIDIA driver, so no GPU to check"
gpus=$(nvidia-smi -L 2>&1) || fail "nvidia-smi cannot list GPUs: $gpus"
grep -q '^GPU ' <<<"$gpus" || fail "nvidia-smi lists no GPU: $gpus"
echo "$gpus"

step "2. onnxruntime-node's CUDA execution provider"
[ "$(uname -s)/$(uname -m)" = "Linux/x86_64" ] || fail "onnxruntime-node ships its CUDA provider for linux/x64 only"
[ -d node_modules/onnxruntime-node ] || fail "node_modules/onnxruntime-node is missing: run scripts/setup.sh first"
if [ ! -f "$CUDA_EP" ]; then
  echo "installing the CUDA 12 provider (Microsoft.ML.OnnxRuntime.Gpu.Linux from api.nuget.org)"
  (cd node_modules/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL=cuda12 node ./script/install) \
    || fail "onnxruntime-node's install script could not fetch the CUDA provider (it needs api.nuget.org)"
fi
[ -f "$CUDA_EP" ] || fail "$CUDA_EP is still missing after the install script ran"
links=$(ldd "$CUDA_EP" 2>&1) || fail "ldd cannot read $CUDA_EP: $links"
missing=$(awk '/not found/ { print $1 }' <<<"$links" | tr '\n' ' ')
[ -z "$missing" ] || fail "the CUDA provider cannot load; missing: ${missing}(it needs the CUDA 12 runtime, cuBLAS and cuDNN 9 on the library path, e.g. an nvidia/cuda 12 cudnn runtime image)"
echo "ok: $CUDA_EP and every library it links"

step "3. build and benchmark package"
npm run build --silent || fail "the TypeScript build failed"
[ -x "$PYTHON" ] || fail "$PYTHON not found: run scripts/setup.sh first (or set PYTHON)"
mkdir -p "$WORK"
"$PYTHON" -m redtrain bench-package --arch resnet18 --members 8 --seed 0 --out "$PKG" \
  || fail "could not write the benchmark package $PKG"

step "4. CUDA against CPU on the golden inputs; raw member latency"
driver=(node dist/scripts/gpu-check.js)
set +e
"${driver[@]}" parity --model "$PKG" --device "cuda:$DEVICE_ID" --runs "$REQUESTS"
tf32=$?
NVIDIA_TF32_OVERRIDE=0 "${driver[@]}" parity --model "$PKG" --device "cuda:$DEVICE_ID" --runs "$REQUESTS"
fp32=$?
set -e
case $fp32 in
  0) ;;
  3) fail "with TF32 off, CUDA still differs from the CPU by more than the package's golden.atol: the service would refuse the package" ;;
  *) fail "with TF32 off, CUDA and CPU logits disagree beyond the stated tolerance (or the run failed; see above)" ;;
esac
service_env=()
case $tf32 in
  0) echo "TF32 on: within golden.atol; the service runs with onnxruntime's default" ;;
  1 | 3)
    echo "TF32 on: beyond golden.atol; the service runs with NVIDIA_TF32_OVERRIDE=0"
    service_env=(NVIDIA_TF32_OVERRIDE=0) ;;
  *) fail "the parity run with TF32 on failed (see above)" ;;
esac

step "5. the service on CUDA: /classify latency"
log=$WORK/server.log
env ${service_env[@]+"${service_env[@]}"} node dist/src/server.js --model "$PKG" --device "cuda:$DEVICE_ID" --port "$PORT" \
  --host 127.0.0.1 --metrics-port off --log-level warn >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
if ! "${driver[@]}" http --model "$PKG" --url "http://127.0.0.1:$PORT" --requests "$REQUESTS" --server-pid "$server"; then
  echo "--- service log ($log)" >&2
  tail -n 40 "$log" >&2
  fail "the service on CUDA did not serve the benchmark package"
fi
grep -q 'serving random weights' "$log" || fail "the service did not warn that it serves random weights"
echo "gpu-check: ok"
