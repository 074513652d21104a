#!/usr/bin/env bash
# Make sure a Docker engine answers and the local base image exists (design §6).
# Idempotent: does nothing when both are already there. Installing and starting the
# engine needs root; an ordinary user in the docker group only gets the checks.
set -euo pipefail

BASE_IMAGE="${HARNESS_BASE_IMAGE:-debian:bookworm-slim}"
SUITE="${HARNESS_BASE_SUITE:-bookworm}"
MIRROR="${HARNESS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/harness-dockerd.log}"

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

engine_up() { docker info >/dev/null 2>&1; }

install_engine() {
  if command -v dockerd >/dev/null 2>&1 && [ -x "$(command -v dockerd)" ] \
     && command -v debootstrap >/dev/null 2>&1 && command -v runsc >/dev/null 2>&1; then
    return
  fi
  log "installing docker.io, debootstrap and runsc from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends docker.io debootstrap runsc tini iproute2 >&2
}

write_daemon_json() {
  # gVisor needs --network=none to run in the root network namespace (design §6).
  mkdir -p /etc/docker
  if [ ! -f /etc/docker/daemon.json ]; then
    cat > /etc/docker/daemon.json <<'JSON'
{
  "runtimes": {"runsc": {"path": "runsc", "runtimeArgs": ["--network=none"]}}
}
JSON
  fi
}

start_engine() {
  if [ "$(id -u)" != 0 ]; then
    log "no Docker engine answers and only root can start one: run 'sudo make docker' once"
    exit 3
  fi
  install_engine
  write_daemon_json
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
bootstrap_base
