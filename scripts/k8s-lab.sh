#!/usr/bin/env bash
# The k8s lab: a real, offline, one-node Kubernetes 1.20 control plane on this machine for the
# Kubernetes backend's tests (docs/k8s-lab.md). Everything listens on 127.0.0.1 only; pods get
# loopback networking only (the lab's Docker engine has no bridge; the CNI plugin
# scripts/k8s-lab/harness-lab-net only gives each pod a 127.x address on a link that stays down).
#
#   scripts/k8s-lab.sh build            build kube-* and kubectl from Debian's source (cached)
#   scripts/k8s-lab.sh start            build if needed, start everything, wait until the node is Ready
#   scripts/k8s-lab.sh stop             stop what start started (by pid), remove the pods' containers
#   scripts/k8s-lab.sh status           what runs, and the node
#   scripts/k8s-lab.sh load IMAGE...    copy images from the harness's engine into the lab's
#   scripts/k8s-lab.sh env              print `export KUBECONFIG=...`
#   scripts/k8s-lab.sh kubectl ARGS...  the lab's kubectl (1.20.2) with the lab's kubeconfig
#
# Runs as root. The harness's own engine (/var/run/docker.sock) is only read from (images).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S_VERSION=1.20.2
# Bookworm has no kubernetes source package; bullseye's is 1.20.2 (the .dsc is gone from the
# mirror, its orig tarball is not). Fetched with a private apt state: host sources untouched.
SRC_SUITE="${HARNESS_K8S_SRC_SUITE:-bullseye}"
SRC_VERSION="1.20.5+really1.20.2"
SRC_MD5="20b98978e86e1e783dd226ce966a85e8"
MIRROR="${HARNESS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

CACHE="${HARNESS_K8S_CACHE:-/var/cache/solo-harness/k8s-lab}"  # the build, outside the checkout
BIN="$CACHE/bin"
STATE=/var/lib/harness-k8s
RUN=/run/harness-k8s
LOGS=/var/log/harness-k8s
PKI="$STATE/pki"
KUBECONFIG_PATH="$STATE/kubeconfig"
SOCK="$RUN/docker.sock"
LAB_DOCKER=(docker -H "unix://$SOCK")

APISERVER_PORT="${HARNESS_K8S_APISERVER_PORT:-16443}"
ETCD_CLIENT_PORT="${HARNESS_K8S_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${HARNESS_K8S_ETCD_PEER_PORT:-12380}"
KUBELET_PORT="${HARNESS_K8S_KUBELET_PORT:-10250}"
KUBELET_HEALTHZ_PORT="${HARNESS_K8S_KUBELET_HEALTHZ_PORT:-10248}"
CM_PORT="${HARNESS_K8S_CONTROLLER_MANAGER_PORT:-10257}"
SCHED_PORT="${HARNESS_K8S_SCHEDULER_PORT:-10259}"
PAUSE_IMAGE=harness-k8s-pause:1
PAUSE_BASE="${HARNESS_K8S_PAUSE_BASE:-debian:bookworm-slim}"
NODE=localhost
READY_TIMEOUT="${HARNESS_K8S_READY_TIMEOUT:-180}"

COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

log() { printf 'k8s-lab: %s\n' "$*" >&2; }
die() { log "$*"; exit 3; }
kctl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

need_root() { [ "$(id -u)" = 0 ] || die "runs as root (it starts dockerd, etcd and the kubelet)"; }

# ---------------------------------------------------------------------------------------- build

built() {
  local c
  for c in "${COMPONENTS[@]}"; do [ -x "$BIN/$c" ] || return 1; done
  [ "$(cat "$BIN/VERSION" 2>/dev/null)" = "$K8S_VERSION" ]
}

install_build_deps() {
  command -v go >/dev/null && command -v rsync >/dev/null && command -v etcd >/dev/null \
    && command -v make >/dev/null && command -v dockerd >/dev/null && return
  log "installing golang-go, rsync, make and etcd-server from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends golang-go rsync make etcd-server docker.io >&2
}

fetch_source() {
  local tarball="$CACHE/src/kubernetes_${SRC_VERSION}.orig.tar.gz"
  if [ ! -f "$tarball" ] || [ "$(md5sum < "$tarball" | cut -d' ' -f1)" != "$SRC_MD5" ]; then
    local dir opts
    dir=$(mktemp -d /var/tmp/harness-k8s-apt.XXXXXX)
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$CACHE/src"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SRC_SUITE main" \
      > "$dir/sources.list"
    opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
          -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache"
          -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Sandbox::User=root")
    log "fetching kubernetes $SRC_VERSION's source from Debian $SRC_SUITE"
    apt-get "${opts[@]}" update -qq >&2
    # Only the orig tarball is needed (and the only part still on the mirror): ignore the rest.
    (cd "$CACHE/src" && apt-get "${opts[@]}" source --download-only kubernetes \
      >"$CACHE/src/apt.log" 2>&1) || true
    rm -rf "$dir"
    if [ "$(md5sum < "$tarball" 2>/dev/null | cut -d' ' -f1)" != "$SRC_MD5" ]; then
      cat "$CACHE/src/apt.log" >&2
      die "could not fetch $tarball"
    fi
  fi
  if [ ! -d "$CACHE/src/kubernetes-$K8S_VERSION/cmd" ]; then
    tar -C "$CACHE/src" -xzf "$tarball"
  fi
}

cmd_build() {
  if built; then log "kubernetes $K8S_VERSION is built in $BIN"; return; fi
  need_root
  install_build_deps
  fetch_source
  local src="$CACHE/src/kubernetes-$K8S_VERSION" what="" c
  for c in "${COMPONENTS[@]}"; do what="$what cmd/$c"; done
  log "building$what with $(go version | cut -d' ' -f3) (about 4 minutes on 2 cores; log: $CACHE/build.log)"
  # No .git in the tarball: the version comes from these variables.
  if ! (cd "$src" && KUBE_GIT_VERSION="v$K8S_VERSION" KUBE_GIT_TREE_STATE=clean \
        KUBE_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56 \
        make WHAT="${what# }" >"$CACHE/build.log" 2>&1); then
    tail -n 30 "$CACHE/build.log" >&2
    die "the build failed; see $CACHE/build.log"
  fi
  mkdir -p "$BIN"
  for c in "${COMPONENTS[@]}"; do install -m 0755 "$src/_output/bin/$c" "$BIN/$c"; done
  echo "$K8S_VERSION" > "$BIN/VERSION"
  log "built into $BIN"
}

# ----------------------------------------------------------------------------------------- pki

gen_key() { [ -f "$1" ] || openssl genrsa -out "$1" 2048 2>/dev/null; }

# sign NAME SUBJECT EXTENSIONS: a certificate signed by the lab's CA.
sign() {
  local name=$1 subject=$2 ext=$3
  [ -f "$PKI/$name.crt" ] && [ "$(cat "$PKI/$name.subject" 2>/dev/null)" = "$subject" ] && return
  gen_key "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
  echo "$subject" > "$PKI/$name.subject"
}

make_pki() {
  mkdir -p "$PKI"
  chmod 0700 "$PKI"
  if [ ! -f "$PKI/ca.crt" ]; then
    gen_key "$PKI/ca.key"
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=harness-k8s-lab-ca" -days 3650 \
      -sha256 -out "$PKI/ca.crt" 2>/dev/null
  fi
  local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  local server="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  sign apiserver "/CN=kube-apiserver" "$server"
  sign kubelet-serving "/CN=localhost" "$server"
  sign admin "/O=system:masters/CN=harness-k8s-admin" "$client"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  sign kubelet "/O=system:nodes/CN=system:node:$NODE" "$client"
  # system:masters: without --use-service-account-credentials every controller (Job's included)
  # acts as this one user, and the bootstrap role system:kube-controller-manager is too narrow.
  sign controller-manager "/O=system:masters/CN=system:kube-controller-manager" "$client"
  sign scheduler "/CN=system:kube-scheduler" "$client"
  gen_key "$PKI/sa.key"
  [ -f "$PKI/sa.pub" ] || openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  write_kubeconfig "$KUBECONFIG_PATH" admin
  write_kubeconfig "$STATE/kubelet.kubeconfig" kubelet
  write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
  write_kubeconfig "$STATE/scheduler.kubeconfig" scheduler
}

# write_kubeconfig PATH CERT: a kubeconfig with the certificates embedded (readable on its own).
write_kubeconfig() {
  local path=$1 cert=$2
  cat > "$path.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: harness-k8s-lab
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 < "$PKI/$cert.crt")
    client-key-data: $(base64 -w0 < "$PKI/$cert.key")
contexts:
- name: harness-k8s-lab
  context:
    cluster: harness-k8s-lab
    user: $cert
    namespace: default
current-context: harness-k8s-lab
EOF
  chmod 0600 "$path.tmp"
  mv "$path.tmp" "$path"
}

# ----------------------------------------------------------------------------------- processes

# alive NAME: the pid in $RUN/NAME.pid runs, and is the program that start started under it.
alive() {
  local pid exe
  pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [ "$(basename "${exe% (deleted)}")" = "$1" ]
}

# launch NAME COMMAND...: in the background, in its own session (it outlives make's process
# group), logging to $LOGS/NAME.log, its pid in $RUN/NAME.pid.
launch() {
  local name=$1
  shift
  if alive "$name"; then return; fi
  log "starting $name (log: $LOGS/$name.log)"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

# wait_for WHAT SECONDS COMMAND...: poll COMMAND until it succeeds, or fail after SECONDS.
wait_for() {
  local what=$1 seconds=$2 deadline
  shift 2
  deadline=$(( $(date +%s) + seconds ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "timed out after ${seconds}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

write_configs() {
  mkdir -p "$STATE/bin" "$STATE/kubelet" "$STATE/cni/bin" "$STATE/cni/net.d"
  # Copies: the lab must not depend on this checkout staying where it is.
  install -m 0755 "$HERE/k8s-lab/runc-clamp-oom" "$STATE/bin/runc-clamp-oom"
  install -m 0755 "$HERE/k8s-lab/harness-lab-net" "$STATE/cni/bin/harness-lab-net"
  install -m 0755 "$HERE/k8s-lab/harness-lab-net" "$STATE/cni/bin/loopback"
  echo '{"cniVersion": "0.4.0", "name": "harness-lab", "type": "harness-lab-net"}' \
    > "$STATE/cni/net.d/10-harness-lab.conf"
  cat > "$STATE/daemon.json" <<EOF
{
  "runtimes": {"harness-clamp": {"path": "$STATE/bin/runc-clamp-oom"}},
  "default-runtime": "harness-clamp"
}
EOF
  cat > "$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
# Only a certificate from the lab's CA gets in (the apiserver's, or an admin's).
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failSwapOn: false
clusterDomain: cluster.local
# This VM forbids a negative oom_score_adj.
oomScoreAdj: 0
# No eviction or image garbage collection on a shared machine's disk: a test must not lose
# harness-base or be refused for disk pressure.
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# The node turns Ready at the first status update after the runtime's network is: 10 s by default.
nodeStatusUpdateFrequency: 1s
EOF
}

start_dockerd() {
  if alive dockerd; then return; fi
  mkdir -p "$STATE/docker" "$RUN/docker-exec"
  # Its own socket, data and exec roots: the harness's engine is not touched. No bridge and no
  # iptables: containers get loopback only. --oom-score-adjust=0: negative ones are refused here.
  launch dockerd dockerd --config-file "$STATE/daemon.json" -H "unix://$SOCK" \
    --data-root "$STATE/docker" --exec-root "$RUN/docker-exec" --pidfile "$RUN/dockerd.daemon.pid" \
    --bridge=none --iptables=false --ip-masq=false --ip6tables=false --oom-score-adjust=0
  wait_for "the lab's dockerd ($LOGS/dockerd.log)" 60 "${LAB_DOCKER[@]}" info \
    || { tail -n 20 "$LOGS/dockerd.log" >&2; exit 3; }
}

ensure_pause_image() {
  "${LAB_DOCKER[@]}" image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return
  load_image "$PAUSE_BASE"
  log "building the pod sandbox image $PAUSE_IMAGE from $PAUSE_BASE"
  local out
  out=$("${LAB_DOCKER[@]}" build -q --network none --build-arg "BASE=$PAUSE_BASE" -t "$PAUSE_IMAGE" \
    -f "$HERE/k8s-lab/pause.Dockerfile" "$HERE/k8s-lab" 2>&1) || die "building $PAUSE_IMAGE failed: $out"
}

# load_image IMAGE: copy it from the harness's engine unless the lab's has the same image id.
load_image() {
  local image=$1 want have
  want=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null) \
    || die "image $image is not in the harness's engine (docker pull does not work here)"
  have=$("${LAB_DOCKER[@]}" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  if [ "$want" = "$have" ]; then return; fi
  log "loading $image into the lab's engine"
  docker save "$image" | "${LAB_DOCKER[@]}" load -q >/dev/null
}

start_control_plane() {
  mkdir -p "$STATE/etcd"
  launch etcd etcd --name harness-k8s-lab --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "harness-k8s-lab=http://127.0.0.1:$ETCD_PEER_PORT"
  launch kube-apiserver "$BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --insecure-port=0 --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=Hostname --allow-privileged=false
  wait_for "the apiserver ($LOGS/kube-apiserver.log)" 90 kctl get --raw /readyz \
    || { tail -n 20 "$LOGS/kube-apiserver.log" >&2; exit 3; }
  launch kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$CM_PORT" --port=0 --leader-elect=false \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key"
  launch kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --port=0 --leader-elect=false
}

start_kubelet() {
  launch kubelet "$BIN/kubelet" --config="$STATE/kubelet-config.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" --root-dir="$STATE/kubelet" \
    --hostname-override="$NODE" \
    --container-runtime=docker --docker-endpoint="unix://$SOCK" \
    --network-plugin=cni --cni-bin-dir="$STATE/cni/bin" --cni-conf-dir="$STATE/cni/net.d" \
    --pod-infra-container-image="$PAUSE_IMAGE" --cert-dir="$PKI/kubelet-certs"
}

node_ready() {
  [ "$(kctl get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

cmd_start() {
  need_root
  cmd_build
  mkdir -p "$STATE" "$RUN" "$LOGS"
  local started
  started=$(date +%s%N)
  make_pki
  write_configs
  start_dockerd
  ensure_pause_image
  start_control_plane
  start_kubelet
  wait_for "node $NODE to be Ready ($LOGS/kubelet.log)" "$READY_TIMEOUT" node_ready \
    || { tail -n 20 "$LOGS/kubelet.log" >&2; exit 3; }
  wait_for "the default service account" 60 kctl get serviceaccount default -n default \
    || exit 3
  log "ready in $(( ($(date +%s%N) - started) / 1000000 )) ms; KUBECONFIG=$KUBECONFIG_PATH"
  echo "$KUBECONFIG_PATH"
}

# stop_pids NAME...: SIGTERM what start started under these names, SIGKILL those still there after 20 s.
stop_pids() {
  local name pids=()
  for name in "$@"; do
    if alive "$name"; then
      pids+=("$(cat "$RUN/$name.pid")")
      log "stopping $name (${pids[-1]})"
      kill -TERM "${pids[-1]}" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  local deadline=$(( $(date +%s) + 20 )) pid left
  while :; do
    left=()
    for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && left+=("$pid"); done
    [ ${#left[@]} -eq 0 ] && return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "killing ${left[*]} (still there 20 s after SIGTERM)"
      kill -KILL "${left[@]}" 2>/dev/null || true
      return 0
    fi
    sleep 0.2
  done
}

cmd_stop() {
  need_root
  stop_pids kubelet
  if alive dockerd; then
    local ids
    ids=$("${LAB_DOCKER[@]}" ps -aq 2>/dev/null || true)
    if [ -n "$ids" ]; then
      log "removing the pods' containers"
      # shellcheck disable=SC2086
      "${LAB_DOCKER[@]}" rm -f $ids >/dev/null || true
    fi
  fi
  stop_pids kube-scheduler kube-controller-manager kube-apiserver
  stop_pids etcd dockerd
  # The kubelet bind-mounts its root dir onto itself and mounts pod volumes under it: unmount all,
  # deepest first, or every start would stack another mount.
  awk -v root="$STATE/kubelet" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/mounts \
    | sort -r | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
  # The next start is a fresh cluster (no leftover pods or jobs); certificates and the lab's
  # images are kept.
  rm -rf "$STATE/etcd" "$STATE/kubelet/pods"
  log "stopped"
}

cmd_status() {
  local name rc=0
  for name in dockerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    if alive "$name"; then
      printf '%-24s running (pid %s)\n' "$name" "$(cat "$RUN/$name.pid")"
    else
      printf '%-24s stopped\n' "$name"
      rc=1
    fi
  done
  if [ -f "$KUBECONFIG_PATH" ] && alive kube-apiserver; then
    kctl get nodes -o wide 2>/dev/null || rc=1
  fi
  echo "KUBECONFIG=$KUBECONFIG_PATH"
  return $rc
}

cmd_load() {
  need_root
  [ $# -gt 0 ] || die "usage: $0 load IMAGE..."
  alive dockerd || die "the lab is not running: $0 start"
  local image
  for image in "$@"; do load_image "$image"; done
}

case "${1:-}" in
  build) cmd_build ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  load) shift; cmd_load "$@" ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_PATH" ;;
  kubectl) shift; kctl "$@" ;;
  *) echo "usage: $0 build|start|stop|status|load IMAGE...|env|kubectl ARGS..." >&2; exit 2 ;;
esac
