#!/usr/bin/env bash
# Make sure a Docker engine answers, gVisor's runsc is current and registered, and the local base
# image exists (design §6). Idempotent: does nothing when all are already there. Installing and
# starting the engine needs root; an ordinary user in the docker group only gets the checks.
set -euo pipefail

BASE_IMAGE="${HARNESS_BASE_IMAGE:-debian:bookworm-slim}"
SUITE="${HARNESS_BASE_SUITE:-bookworm}"
MIRROR="${HARNESS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/harness-dockerd.log}"
DAEMON_JSON="${HARNESS_DAEMON_JSON:-/etc/docker/daemon.json}"
# Bookworm's runsc (0.0~20221219) fails statx with EINVAL, which breaks coreutils ls/stat in the
# sandbox; trixie's (a static binary with no dependencies) does not. It comes from trixie's
# archive for this one package: the host's apt sources are not changed.
RUNSC_SUITE="${HARNESS_RUNSC_SUITE:-trixie}"
RUNSC_MIN_VERSION="0.0~20240729"
# --network=none: gVisor cannot run in the root network namespace otherwise (design §6).
# --host-uds=open: a process in the sandbox may connect to a host Unix socket bind-mounted into
# it (the model gateway's); it still cannot create one on the host.
RUNSC_ARGS='["--network=none", "--host-uds=open"]'

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

engine_up() { docker info >/dev/null 2>&1; }

install_engine() {
  if command -v dockerd >/dev/null 2>&1 && [ -x "$(command -v dockerd)" ] \
     && command -v debootstrap >/dev/null 2>&1; then
    return
  fi
  # Only what a run needs: the test suite's own tools (tmux, chromium) are scripts/ensure-test-tools.sh's.
  log "installing docker.io and debootstrap from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends docker.io debootstrap tini iproute2 >&2
}

runsc_current() {
  local version
  version=$(dpkg-query -W -f='${Version}' runsc 2>/dev/null) || return 1
  command -v runsc >/dev/null 2>&1 && dpkg --compare-versions "$version" ge "$RUNSC_MIN_VERSION"
}

install_runsc() {
  runsc_current && return
  if [ "$(id -u)" != 0 ]; then
    log "runsc is missing or older than $RUNSC_MIN_VERSION (ls/stat fail under it): run 'sudo make docker' once"
    return
  fi
  local dir opts
  dir=$(mktemp -d /var/tmp/harness-runsc.XXXXXX)
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/deb"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $RUNSC_SUITE main" > "$dir/sources.list"
  # A private apt state for the one download: only runsc comes from $RUNSC_SUITE.
  opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache"
        -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Sandbox::User=root")
  log "installing runsc from Debian $RUNSC_SUITE (bookworm's fails statx inside the sandbox)"
  apt-get "${opts[@]}" update -qq >&2
  (cd "$dir/deb" && apt-get "${opts[@]}" download runsc >&2)
  dpkg -i "$dir"/deb/runsc_*.deb >&2
  rm -rf "$dir"
  runsc_current || { log "runsc from $RUNSC_SUITE did not install"; exit 3; }
}

# Register runsc in daemon.json with its arguments, keeping any other setting. Exit status 0
# when the file changed (the engine must reload it), 1 when it already said so.
write_daemon_json() {
  mkdir -p "$(dirname "$DAEMON_JSON")"
  python3 - "$DAEMON_JSON" "$RUNSC_ARGS" <<'PY'
import json, os, sys
path, args = sys.argv[1], json.loads(sys.argv[2])
try:
    with open(path) as f:
        config = json.load(f)
except FileNotFoundError:
    config = {}
want = {"path": "runsc", "runtimeArgs": args}
if config.get("runtimes", {}).get("runsc") == want:
    sys.exit(1)
config.setdefault("runtimes", {})["runsc"] = want
with open(path + ".tmp", "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
os.replace(path + ".tmp", path)
PY
}

runsc_registered() {
  docker info --format '{{json .Runtimes.runsc}}' 2>/dev/null | grep -q -- '--host-uds=open'
}

# A running engine re-reads its runtimes on SIGHUP: running containers are not touched.
reload_engine() {
  local pid
  pid=$(cat /var/run/docker.pid 2>/dev/null || pgrep -xo dockerd || true)
  if [ -z "$pid" ]; then
    log "cannot find dockerd's pid to reload $DAEMON_JSON: restart the engine to register runsc's arguments"
    return
  fi
  log "reloading dockerd ($pid) for runsc's arguments in $DAEMON_JSON"
  kill -HUP "$pid"
  for _ in $(seq 1 60); do
    engine_up && runsc_registered && return
    sleep 0.5
  done
  log "dockerd did not register runsc's arguments after a reload; restart it (its log: $DOCKERD_LOG)"
  exit 3
}

ensure_runsc() {
  install_runsc
  if [ "$(id -u)" = 0 ]; then
    if write_daemon_json; then reload_engine; fi
  elif ! runsc_registered; then
    log "runsc is not registered with $RUNSC_ARGS in $DAEMON_JSON: run 'sudo make docker' once"
  fi
}

start_engine() {
  if [ "$(id -u)" != 0 ]; then
    log "no Docker engine answers and only root can start one: run 'sudo make docker' once"
    exit 3
  fi
  install_engine
  install_runsc
  write_daemon_json || true
  if ! pgrep -x containerd >/dev/null 2>&1 && command -v containerd >/dev/null 2>&1; then
    : # dockerd starts its own containerd when none runs
  fi
  log "starting dockerd (no bridge, no iptables: containers get no address off loopback)"
  # setsid: the engine must outlive the make/CI process group that started it.
  setsid dockerd --bridge=none --iptables=false --ip-masq=false \
    --group docker >"$DOCKERD_LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    engine_up && return
    sleep 1
  done
  log "dockerd did not answer within 60 s; see $DOCKERD_LOG"
  tail -n 20 "$DOCKERD_LOG" >&2 || true
  exit 3
}

bootstrap_base() {
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return
  if [ "$(id -u)" != 0 ]; then
    log "base image $BASE_IMAGE is missing and only root can debootstrap it"
    exit 3
  fi
  install_engine
  local dir
  dir=$(mktemp -d /var/tmp/harness-rootfs.XXXXXX)
  trap 'rm -rf "$dir"' RETURN
  log "bootstrapping $BASE_IMAGE offline from Debian's packages (about a minute)"
  debootstrap --variant=minbase "$SUITE" "$dir" "$MIRROR" >&2
  # Trim what a slim image does not carry.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | docker import - "$BASE_IMAGE" >/dev/null
  log "imported $BASE_IMAGE"
}

if ! engine_up; then
  getent group docker >/dev/null 2>&1 || { [ "$(id -u)" = 0 ] && groupadd -r docker; } || true
  start_engine
fi
ensure_runsc
bootstrap_base
