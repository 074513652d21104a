"""The shell scripts that a copy's helpers run as the agent uid (runner/loop/workspace.py drives them): making
the copy (a full clone, a copy from the seed, or an overlay of the seed's tree), its checkpoint and harvest,
listing what the setup left outside git, and deleting it.

Every script runs with the agent's copy, whose .git/config the agent controls: hooks and fsmonitor are off on
every git command, and the host verifies what a script prints rather than trusting it.
"""

from __future__ import annotations

from runner.base.layout import OUTBOX_DIR, RELAY, SEED_DIR, WORKSPACE

EXPORT_REF = "refs/harness/export"
VIEW_DIR = "check-view"  # the check's view of the copy, with protected paths as the base has them
# On an engine whose mounts may be copies (not `HostMounts`), the view is made in VIEW_DIR/VIEW_OWN, and only
# VIEW_DIR is the helper's to write (runner/loop/workspace.py, `Workspace.check_view`).
VIEW_OWN = "view"

TREE_INDEX = "/harness-tree-index"  # the seed's tree's index, read-only, in the helper that makes a copy over it
GIT_ENV = "export HOME=/tmp GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0; "
GIT = "git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c commit.gpgsign=false"
# A copy's checkout writes its files with several workers: on a repository of many small files it waits on the
# disk's latency, not on a core (20k files of 3 KB: a third of the time with 4 workers, docs/performance.md).
CHECKOUT = f"{GIT} -c checkout.workers=4 checkout"

# The first container of a run in its image: an image that lacks what the agent's containers need is refused
# here, in one line, rather than failing each iteration with "not found". (The helpers run in harness-base.)
IMAGE_CHECK = f"""
for tool in git {RELAY}; do
  command -v "$tool" >/dev/null 2>&1 || {{
    echo "the image has no $tool: a run's image needs git and {RELAY}" \
      "(the agent's route to the model gateway): build it FROM harness-base, or give --image a plain image" \
      "and the harness derives one"
    exit 3
  }}
done
"""

CREATE = (
    GIT_ENV
    + f"""set -eu
git config --global safe.directory '*'
mkdir -p /run-root/workspace /run-root/outbox /run-root/export
{GIT} clone --quiet --no-local --no-hardlinks --no-checkout /source /run-root/workspace
cd /run-root/workspace
git remote remove origin
{CHECKOUT} --quiet -B "$HARNESS_BRANCH" "$HARNESS_BASE"
"""
)

# A copy made from the repository's seed (runner/loop/seed.py): a fresh repository whose objects are read from
# the seed's read-only mount (one alternates line), so that only the checkout is left to do.
CREATE_FROM_SEED = (
    GIT_ENV
    + f"""set -eu
git config --global safe.directory '*'
mkdir -p /run-root/workspace /run-root/outbox /run-root/export
cd /run-root/workspace
{GIT} -c init.defaultBranch=harness-unborn init --quiet
printf '%s\\n' {SEED_DIR}/objects > .git/objects/info/alternates
{CHECKOUT} --quiet -B "$HARNESS_BRANCH" "$HARNESS_BASE"
"""
)

# The seed's tree of a commit (runner/loop/seed.py, `tree_dir`), made once per repository and base commit for
# the copies made over it, in the trees' directory at /trees, from the user's object store (read-only at /source,
# as a clone reads it; only the commit's own files are taken): made while the seed is, not after it. Its files are
# dated a moment back before the index is written, so that no entry of the index is "racily clean" for a copy.
MAKE_TREE = (
    GIT_ENV
    + f"""set -eu
git config --global safe.directory '*'
cd /trees
c="$HARNESS_BASE"
rm -rf "$c.tmp" "$c.git" "$c.index"
mkdir "$c.tmp"
git init --quiet --bare "$c.git"
printf '%s\\n' /source/objects > "$c.git/objects/info/alternates"
G="{GIT} --git-dir=$c.git --work-tree=$c.tmp"
$G -c checkout.workers=4 checkout --quiet -f --detach "$c"  # a switch, not paths: its checkout is parallel
find "$c.tmp" -exec touch -h -d "@$(( $(date +%s) - 2 ))" {{}} +
$G update-index -q --refresh
mv "$c.git/index" "$c.index"
rm -rf "$c.git"
mv "$c.tmp" "$c"
"""
)

# A copy made over the seed's tree (an overlay: RunDir.lower), before the overlay is first mounted: its
# directories (the copy's top is then the agent's, as a clone's is) and, in the overlay's upper layer, its .git,
# whose index is the tree's (valid over the tree: the same files, inodes and times) and whose HEAD the base.
CREATE_OVER_TREE = (
    GIT_ENV
    + f"""set -eu
git config --global safe.directory '*'
mkdir -p /run-root/workspace /run-root/overlay-work /run-root/outbox /run-root/export
cd /run-root/workspace
{GIT} -c init.defaultBranch=harness-unborn init --quiet
printf '%s\\n' {SEED_DIR}/objects > .git/objects/info/alternates
cp {TREE_INDEX} .git/index
git symbolic-ref HEAD "refs/heads/$HARNESS_BRANCH"
git update-ref "refs/heads/$HARNESS_BRANCH" "$HARNESS_BASE"
{GIT} diff-index --cached --quiet HEAD -- || {{ echo "the seed's tree is not the base commit"; exit 3; }}
"""
)

# Runs with the agent's copy, whose .git/config the agent controls: that is why it runs in a
# sandbox like the agent's own, and why the host verifies everything it prints.
CHECKPOINT = (
    GIT_ENV
    + f"""set -eu
cd {WORKSPACE}
find {OUTBOX_DIR} -mindepth 1 -delete 2>/dev/null || true
rm -f /export/export.bundle
G="{GIT} -c user.name=harness -c user.email=harness@localhost.invalid"
# The copy is the agent's: make all of it readable to measure it and commit it. Only what lacks
# the bits is changed: a chmod of every file would change every ctime and make `git add` hash the
# whole tree again. Directories one at a time (a closed one is opened before find looks inside),
# unreadable files in batches (git's own read-only objects are left alone).
find . \\( -type d ! -perm -u=rwx -exec chmod u+rwx {{}} \\; \\) \\
  -o \\( ! -type d ! -perm -u=r -exec chmod u+rw {{}} + \\) 2>/dev/null || true
size=$(du -sxb . | cut -f1)
echo "harness-disk $size"
# Over --max-disk: neither commit nor bundle it, so it cannot fill the user's disk through the harvest.
if [ -n "${{HARNESS_MAX_DISK:-}}" ] && [ "$size" -gt "$HARNESS_MAX_DISK" ]; then
  echo "harness-export over $HARNESS_LAST"; exit 0
fi
$G add -A
# What the setup left in the copy outside git (a virtualenv, node_modules) is never committed, whatever
# .gitignore says now: one path per line, checked by the host when the setup ran.
printf '%s\n' "${{HARNESS_KEEP_OUT:-}}" | while IFS= read -r path; do
  if [ -n "$path" ]; then $G rm -r -q --cached --ignore-unmatch -- "$path" >/dev/null; fi
done
if ! $G diff --cached --quiet; then
  $G commit --quiet --no-verify -m "harness: checkpoint after iteration $HARNESS_ITERATION"
fi
head=$(git rev-parse --verify 'HEAD^{{commit}}')
if [ "$head" = "$HARNESS_LAST" ]; then echo "harness-export none $head"; exit 0; fi
if git merge-base --is-ancestor "$head" "$HARNESS_LAST" || git merge-base --is-ancestor "$head" "$HARNESS_BASE"
then echo "harness-export known $head"; exit 0; fi
git update-ref {EXPORT_REF} "$head"
if git merge-base --is-ancestor "$HARNESS_LAST" "$head"; then not="$HARNESS_LAST"
elif git merge-base --is-ancestor "$HARNESS_BASE" "$head"; then not="$HARNESS_BASE"
else not=""; fi
git bundle create -q /export/export.bundle {EXPORT_REF} ${{not:+^$not}}
echo "harness-export bundle $head"
"""
)

# What is in the copy outside git: untracked and ignored paths (NUL-separated, for the host to check).
OUTSIDE_GIT = GIT_ENV + f"cd {WORKSPACE} && {GIT} status --porcelain=v1 --ignored --untracked-files=normal -z"

# An overlay's scratch directories (`work`, `index`) are the engine's (root's), empty once it is unmounted: rmdir
# takes them where rm -r, which would read them first, cannot.
DELETE = f"""set -u
rmdir /run-root/overlay-work/work /run-root/overlay-work/index 2>/dev/null
rm -rf /run-root/workspace /run-root/overlay-work /run-root/outbox /run-root/export /run-root/{VIEW_DIR}
"""
DELETE_TREES = "find /trees -mindepth 1 -delete"
# Some of the trees (HARNESS_TREES: their commits), each with its index and what a killed maker left.
DELETE_SOME_TREES = 'cd /trees && for c in $HARNESS_TREES; do rm -rf -- "$c" "$c.index" "$c.tmp" "$c.git"; done'
VIEW = 'exec python3 -c "$HARNESS_VIEW_PY"'  # runner/loop/protect.py
VIEW_REMOVE = f"rm -rf /run-root/{VIEW_DIR}"
VIEW_REMOVE_OWN = f"rm -rf /run-root/{VIEW_DIR}/{VIEW_OWN}"
