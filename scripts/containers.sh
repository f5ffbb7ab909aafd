#!/usr/bin/env bash
# The deployment files run with real containers, on a machine without Docker or a reachable image
# registry: Debian's podman (4.3) with runc, base images made from Debian packages.
#
#   bash scripts/containers.sh [image] [compose] [kube]      # all three when none is named; needs root
#
#   1. Base images, kept between runs (localhost/redserve-ct-node and -nginx): a Node base
#      (debootstrap --variant=minbase bookworm, this machine's /usr/bin/node and npm, a user node
#      with uid 1000 as in the Node.js images) and an nginx base (the same with Debian's nginx and
#      wget). `podman rmi` them to make them again.
#   2. `podman build` of the Dockerfile's CPU variant with --build-arg NODE_IMAGE=<the Node base>,
#      tagged redserve:<package version>, the name the compose file and the manifests use.
#   image:   one container per shipped package classifies that package's golden images; every
#            answer must be one member's golden probabilities (softmax of its golden logits).
#   compose: podman-compose runs docker-compose.yml with an override file for the load balancer
#            only (the nginx base, and deploy/nginx.conf without what nginx 1.22 lacks); then the
#            replica test of scripts/replicas.sh against the containers: spread, SIGKILL under
#            load, `podman stop` (SIGTERM) under load.
#   kube:    `podman kube play` of deploy/k8s/deployment.yaml with the adaptations it prints; the
#            script runs the manifest's probes against the pod and classifies through it.
#
# Everything it starts it stops, and the images (but the two bases), networks and cgroups it
# creates it removes, on any exit. The counts it prints are recorded in reports/deployment.md.
#
# The compose file publishes the load balancer on host port 8080: the script stops if it is taken.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

phases=("$@")
[ ${#phases[@]} -gt 0 ] || phases=(image compose kube)
for p in "${phases[@]}"; do
  case "$p" in image|compose|kube) ;; *) echo "usage: $0 [image] [compose] [kube]" >&2; exit 2 ;; esac
done
wants() { local p; for p in "${phases[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

[ "$(id -u)" -eq 0 ] || { echo "containers.sh: needs root (debootstrap, rootful podman)" >&2; exit 1; }
[ -d node_modules/yaml ] || { echo "containers.sh: node_modules is missing: run bash scripts/setup.sh" >&2; exit 1; }

t0=$(date +%s)
step() { echo "== $(( $(date +%s) - t0 )) s: $*"; }
fail() { echo "containers.sh: FAILED: $*" >&2; exit 1; }

# --- 0. tools ---------------------------------------------------------------------------------
missing=()
for tool in podman:podman runc:runc podman-compose:podman-compose buildah:buildah debootstrap:debootstrap; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

state=$(mktemp -d /tmp/redserve-containers.XXXXXX)
trap 'rm -rf "$state"' EXIT  # until the full clean-up below takes over
# What runs is the last commit, exported: the Dockerfile, compose file, nginx.conf, manifests and
# models together, whatever is being edited in this checkout meanwhile.
commit=$(git rev-parse --short HEAD)
tree=$state/tree
mkdir -p "$tree" && git archive HEAD | tar -x -C "$tree"
changed=$(git status --porcelain --untracked-files=no | wc -l)
[ "$changed" -eq 0 ] || echo "   note: $changed uncommitted change(s) in this checkout are not in what runs (commit $commit)"
cd "$tree"
check() { node "$root/scripts/containers-check.mjs" "$@"; }

version=$(node -p 'require("./package.json").version')
image=localhost/redserve:$version
project=redserve-ct
host_port=8080  # docker-compose.yml's

# The recipe that runs containers on this machine, for every podman call (podman-compose's too):
# runc, as the default runtime refuses the mixed cgroup v1/v2 layout; cgroupfs, as there is no
# systemd; ulimits within this machine's hard limits (podman's defaults exceed them).
cat > "$state/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$state/containers.conf
podman info >/dev/null 2>&1 || fail "podman cannot run here: $(podman info 2>&1 | tail -3)"
echo "   podman $(podman version -f '{{.Client.Version}}'), $(runc --version | head -1), commit $commit"

# --- clean-up: whatever this run created, on any exit --------------------------------------------
images_before=$(podman images -aq --no-trunc | sort -u)
cgroup_parents=()
for controller in /sys/fs/cgroup/*/; do
  [ -d "${controller}libpod_parent" ] || cgroup_parents+=("${controller}libpod_parent")
done
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  echo "== clean-up"
  podman kube down "$state/deployment.yaml" >/dev/null 2>&1
  podman pod rm -f -t 0 --filter "label=redserve-ct=1" >/dev/null 2>&1
  ids=$(podman ps -aq --filter "label=redserve-ct=1"; podman ps -aq --filter "label=io.podman.compose.project=$project")
  [ -n "$ids" ] && podman rm -f -t 0 $ids >/dev/null 2>&1
  for pod in $(podman pod ps -q --filter "name=^redserve-pod"); do podman pod rm -f -t 0 "$pod" >/dev/null 2>&1; done
  podman network rm -f "${project}_default" >/dev/null 2>&1
  images_now=$(podman images -aq --no-trunc | sort -u)
  created=$(comm -13 <(echo "$images_before") <(echo "$images_now"))
  [ -n "$created" ] && podman rmi -f $created >/dev/null 2>&1
  # cgroup folders podman made for this run's containers (libpod_parent did not exist before).
  for d in "${cgroup_parents[@]}"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  left=$(podman ps -aq --filter "label=redserve-ct=1"; podman ps -aq --filter "label=io.podman.compose.project=$project")
  [ -z "$left" ] || echo "containers.sh: containers left: $left" >&2
  cd / && rm -rf "$state"
  echo "== $(( $(date +%s) - t0 )) s: done (exit $rc)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if podman image exists "$image"; then
  fail "$image exists already: this script builds and removes its own (podman rmi $image)"
fi

# --- 1. base images ---------------------------------------------------------------------------
# Kept between runs as podman images whose tag names what went into them (the recipe's version
# below, this machine's node binary): a change makes a new one and removes the old.
node_sum=$(sha256sum /usr/bin/node | cut -c1-12)
tag=bookworm-r1-$node_sum
make_base() { # repository, extra packages (comma list), setup function, podman import --change...
  local repo=$1 include=$2 setup=$3; shift 3
  if podman image exists "$repo:$tag"; then
    echo "   $repo:$tag: cached"
    return
  fi
  local dir="$state/rootfs"
  step "making $repo:$tag: debootstrap --variant=minbase --include=$include bookworm"
  debootstrap --variant=minbase --include="$include" bookworm "$dir" http://deb.debian.org/debian \
    > "$state/debootstrap.log" 2>&1 || { tail -20 "$state/debootstrap.log" >&2; fail "debootstrap ($repo)"; }
  "$setup" "$dir"
  chroot "$dir" apt-get clean
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/log/*.log
  for old in $(podman images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$repo"); do podman rmi "$old" >/dev/null; done
  tar -C "$dir" -c . | podman import -q "$@" - "$repo:$tag" >/dev/null
  rm -rf "$dir"
}
setup_node() {
  local dir=$1
  # The layout of the Node.js images: node and npm under /usr/local, a user node with uid 1000.
  install -m 755 /usr/bin/node "$dir/usr/local/bin/node"
  mkdir -p "$dir/usr/local/lib/node_modules"
  cp -a /usr/lib/node_modules/npm "$dir/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$dir/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$dir/usr/local/bin/npx"
  chroot "$dir" groupadd --gid 1000 node
  chroot "$dir" useradd --uid 1000 --gid node --create-home --shell /bin/sh node
}
setup_nginx() {
  local dir=$1
  # Logs to the container's output, as the nginx images do.
  ln -sf /dev/stdout "$dir/var/log/nginx/access.log"
  ln -sf /dev/stderr "$dir/var/log/nginx/error.log"
}
node_base=localhost/redserve-ct-node:$tag
nginx_base=localhost/redserve-ct-nginx:$tag
# ca-certificates: NODE_EXTRA_CA_CERTS names its bundle; builds mount this machine's over it.
make_base localhost/redserve-ct-node ca-certificates setup_node \
  --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' --change 'CMD ["node"]'
make_base localhost/redserve-ct-nginx nginx,wget setup_nginx \
  --change 'CMD ["nginx", "-g", "daemon off;"]' --change 'STOPSIGNAL SIGQUIT'
images_before=$(podman images -aq --no-trunc | sort -u)  # the bases stay; what follows is removed
echo "   node base: $(podman run --rm "$node_base" sh -c 'echo node $(node --version), npm $(npm --version 2>/dev/null)')"
echo "   nginx base: $(podman run --rm "$nginx_base" nginx -v 2>&1)"

# --- 2. the image -----------------------------------------------------------------------------
step "podman build (CPU variant) --build-arg NODE_IMAGE=$node_base -> $image"
build_t0=$(date +%s)
# --network host and this machine's CA bundle: npm ci reaches the registry the way this machine
# does. --format docker keeps the Dockerfile's HEALTHCHECK (OCI images have none).
podman build -q --format docker --network host -v /etc/ssl/certs:/etc/ssl/certs:ro \
  --build-arg NODE_IMAGE="$node_base" --build-arg VARIANT=cpu -t "$image" . > "$state/build.log" 2>&1 \
  || { tail -30 "$state/build.log" >&2; fail "podman build"; }
echo "   built in $(( $(date +%s) - build_t0 )) s: $(podman image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'), user $(podman image inspect -f '{{.Config.User}}' "$image"), HEALTHCHECK $(podman image inspect -f '{{if .HealthCheck}}{{join .HealthCheck.Test " "}}{{end}}' "$image" | cut -c1-50)..."

# The container's address on podman's network (the host reaches it directly as root).
ip_of() { podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" | awk '{print $1}'; }
wait_ready() { # container, url; 120 s at most
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$2" 2>/dev/null)" = 200 ] && return 0
    [ "$(podman inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ] || { podman logs "$1" 2>&1 | tail -20 >&2; fail "$1 exited"; }
    sleep 0.2
  done
  podman logs "$1" 2>&1 | tail -20 >&2
  fail "$1: $2 not 200 after 120 s"
}

# --- image: each package's golden images through its own container ------------------------------
if wants image; then
  step "image: one container per package, classifying its golden images"
  # podman runs healthchecks from systemd timers, and this machine has no systemd: the script runs
  # each one itself (podman healthcheck run), once the container is ready.
  for dir in models/*/; do
    pkg=$(basename "$dir")
    name=redserve-ct-$pkg
    podman run -d -q --name "$name" --label redserve-ct=1 -e REDSERVE_MODEL="/app/models/$pkg" "$image" >/dev/null 2>>"$state/podman.log"
  done
  for dir in models/*/; do
    pkg=$(basename "$dir")
    name=redserve-ct-$pkg
    ip=$(ip_of "$name")
    wait_ready "$name" "http://$ip:8080/readyz"
    # 8 rounds over the golden images: random draws, so several members answer.
    check golden "http://$ip:8080" "$dir" 8 || fail "golden images through $name"
    check health "$name" "the image's HEALTHCHECK" || fail "$name: HEALTHCHECK"
  done
  podman rm -f -t 10 $(podman ps -aq --filter label=redserve-ct=1) >/dev/null 2>>"$state/podman.log"
fi

# --- compose: docker-compose.yml with podman-compose, and the replica test ----------------------
# podman-compose 1.0.3 with two of its bugs worked around, nothing else of it changed:
# - it pops the healthcheck's "CMD" off the service's own list while it creates the first replica,
#   so the second gets ["node", ...] and it stops ("unknown healthcheck test type [node]"): each
#   container is given its own copy;
# - it joins a CMD healthcheck's words into one shell string without quoting them as a whole, so
#   `node -e "fetch(...)"` reaches the shell with bare parentheses and always fails: the same words
#   are passed as CMD-SHELL, quoted by Python's shlex.join (the same command, through sh -c).
podman_compose() {
  local python
  python=$(sed -n '1s/^#! *//p' "$(command -v podman-compose)")  # the interpreter it is installed for
  $python - "$@" <<'PY'
import copy, shlex, sys
import podman_compose as pc
original = pc.container_to_args
def container_to_args(compose, cnt, detached=True):
    cnt = copy.deepcopy(cnt)
    test = (cnt.get("healthcheck") or {}).get("test")
    if isinstance(test, list) and test and test[0] == "CMD":
        cnt["healthcheck"]["test"] = ["CMD-SHELL", shlex.join(test[1:])]
    return original(compose, cnt, detached)
pc.container_to_args = container_to_args
sys.argv[0] = "podman-compose"
pc.main()
PY
}

if wants compose; then
  step "compose: podman-compose -f docker-compose.yml -f <override> up -d"
  if (exec 3<>"/dev/tcp/127.0.0.1/$host_port") 2>/dev/null; then
    fail "port $host_port (the compose file publishes it) is in use here"
  fi
  # nginx 1.22 (Debian's) has no 'resolve' for upstream servers (open-source nginx >= 1.27.3):
  # without it nginx resolves the service name once, at start, to the replicas' three addresses,
  # through the container's resolv.conf (podman's DNS; 127.0.0.11 is Docker's). The access log
  # records each request's upstream attempts, for the counts. Everything else is the file as shipped.
  sed -e 's|^\(\s*server redserve:8080\) resolve |\1 |' \
      -e "s|^\(\s*\)access_log off;|\1log_format attempts '\$status \$upstream_addr \$upstream_status';\n\1access_log /var/log/nginx/attempts.log attempts;|" \
      deploy/nginx.conf > "$state/nginx.conf"
  grep -q '^\s*server redserve:8080 max_fails' "$state/nginx.conf" && grep -q 'attempts.log attempts;' "$state/nginx.conf" \
    || fail "could not render nginx.conf from deploy/nginx.conf (has it changed shape?)"
  cat > "$state/compose.override.yml" <<EOF
services:
  lb:
    image: $nginx_base
    volumes:
      - $state/nginx.conf:/etc/nginx/nginx.conf:ro
EOF
  compose=(podman_compose -p "$project" -f docker-compose.yml -f "$state/compose.override.yml")
  "${compose[@]}" up -d --no-build > "$state/compose-up.log" 2>&1 || { tail -30 "$state/compose-up.log" >&2; fail "podman-compose up"; }
  replicas=$(podman ps -q --filter "label=io.podman.compose.project=$project" --filter "label=com.docker.compose.service=redserve" | wc -l)
  echo "   podman-compose $(dpkg-query -W -f '${Version}' podman-compose): $replicas redserve replicas (deploy.replicas), lb on 127.0.0.1:$host_port"
  for n in $(seq 1 "$replicas"); do
    wait_ready "${project}_redserve_$n" "http://$(ip_of "${project}_redserve_$n"):8080/readyz"
  done
  wait_ready "${project}_lb_1" "http://127.0.0.1:$host_port/readyz"
  for c in $(podman ps --format '{{.Names}}' --filter "label=io.podman.compose.project=$project"); do
    check health "$c" "compose healthcheck" || fail "$c: compose healthcheck"
  done
  step "compose: the replica test (spread, SIGKILL, SIGTERM) through the load balancer"
  check replicas "http://127.0.0.1:$host_port" "$project" models/fmnist-baseline \
    || fail "replica test against the compose containers"
  "${compose[@]}" down > "$state/compose-down.log" 2>&1 || true
  podman network rm -f "${project}_default" >/dev/null 2>&1 || true
fi

# --- kube: podman kube play of the Deployment ----------------------------------------------------
if wants kube; then
  step "kube: podman kube play of deploy/k8s/deployment.yaml (adapted)"
  check adapt deploy/k8s/deployment.yaml "$state/deployment.yaml" "$state/probes.json" \
    || fail "adapting deploy/k8s/deployment.yaml"
  for port in 8080 9464; do  # podman publishes the containerPorts on the host
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port (the pod's) is in use here"; fi
  done
  podman kube play --network podman "$state/deployment.yaml" > "$state/kube-play.log" 2>&1 \
    || { cat "$state/kube-play.log" >&2; fail "podman kube play"; }
  pods=$(podman pod ps -q --filter "name=^redserve-pod")
  [ -n "$pods" ] || fail "kube play started no pod"
  for pod in $pods; do
    cname=$(podman pod inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$pod" | tr ' ' '\n' | grep -v -- '-infra$' | head -1)
    infra=$(podman pod inspect -f '{{.InfraContainerID}}' "$pod")
    ip=$(ip_of "$infra")
    echo "   pod $(podman pod inspect -f '{{.Name}}' "$pod"): container $cname at $ip, user $(podman inspect -f '{{.Config.User}}' "$cname"), read-only root: $(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$cname")"
    check probes "http://$ip" "$state/probes.json" "$cname" || fail "probes of $cname"
    check golden "http://$ip:8080" models/fmnist-baseline 4 || fail "classifying through $cname"
  done
  podman kube down "$state/deployment.yaml" >/dev/null 2>&1 || true
fi

step "all checks passed"
