#!/usr/bin/env bash
# The test suite's own tools, which `make demo` and a user's run never need (hence not ensure-docker.sh's):
# tmux (the hud's test drives `harness hud` in a real terminal) and chromium (the report's test opens its
# HTML page headless), from Debian's packages. Idempotent; installing needs root: as an ordinary user it only
# says what is missing (those tests skip without it, and fail under CI=true).
set -euo pipefail

log() { printf 'ensure-test-tools: %s\n' "$*" >&2; }

missing=()
for tool in tmux chromium; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ "${#missing[@]}" = 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  log "${missing[*]} missing (their tests skip without them): run 'sudo make test-tools' once"
  exit 0
fi
log "installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
