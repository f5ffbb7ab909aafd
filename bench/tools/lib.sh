# Shared by the bench/tools/*.sh measurements (sourced, not run).

# Wait until the server on localhost:PORT answers /readyz with 200 (two minutes at most).
ready() {
  for _ in $(seq 240); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$1/readyz")" = 200 ] && return 0
    sleep 0.5
  done
  echo "the server on port $1 never became ready" >&2
  return 1
}

# CPU time of process PID's main thread (a Node server's event loop) so far, in nanoseconds.
main_ns() { awk '{print $1}' "/proc/$1/task/$1/schedstat"; }

# The ResNet-18 x 8 benchmark package (bench/workloads.ts makes the same one on first use).
resnet18_package() {
  local package=bench/.packages/resnet18-x8
  [ -d $package ] || .venv/bin/python -m redtrain bench-package --arch resnet18 --members 8 --seed 0 --out $package >&2
  echo $package
}
