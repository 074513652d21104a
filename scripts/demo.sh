#!/usr/bin/env bash
# `make demo`: a real harness run of the offline demo agent on a fresh sample repository.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
harness="$here/.venv/bin/harness"
demo=$(mktemp -d "${TMPDIR:-/tmp}/harness-demo.XXXXXX")
export HARNESS_HOME="$demo/harness-home"

repo="$demo/sample-repo"
mkdir -p "$repo"
git -C "$repo" init -q -b main
printf 'def add(a, b):\n    return a + b\n' > "$repo/calc.py"
printf '# Sample project\n' > "$repo/README.md"
git -C "$repo" add -A
git -C "$repo" -c user.name=demo -c user.email=demo@example.invalid commit -q -m "sample project"

echo "== sample repository: $repo" >&2
cd "$repo"
"$harness" run --objective "Record two steps of progress in DEMO_PROGRESS.md" \
  --session demo --worktree --agent demo --max-iterations 3
echo >&2
echo "== harness status --session demo" >&2
"$harness" status --session demo
echo >&2
echo "== git log harness/demo" >&2
git --no-pager log --oneline main..harness/demo
echo >&2
echo "The sample repository stays in $demo (the copy: $HARNESS_HOME)." >&2
