"""Attack row 32: a racer writes into the shared checkout its copy is an overlay of (runner/loop/workspace.py).

Racers of one repository on Docker work on overlays of one tree, the seed's checkout of their base commit; the
tree is every racer's lower layer and nobody's to write. The attacker's agent does to the tree's files, through
its copy, everything a uid can: overwrite, append, truncate, chmod, re-date, delete, rename, hard-link; it writes
to the tree's own host path (as one who knows the harness's layout would guess it), and plants a git filter that
tries the same from the checkpoint's helper container. Positive controls: each write lands in the attacker's
own copy (its harvest carries them) and the planted filter runs in the helper. Then a victim racer made over the
same tree afterwards finds every file as the base has it, and so does the host: the tree is byte for byte and mode
for mode what it was.
"""

from __future__ import annotations

import pytest

from runner.base.paths import run_dir, seed_dir
from runner.loop.seed import tree_dir
from runner.record.models import RunState
from tests.helpers import GitRepo
from tests.seeded import start_seeded, tree_digest

pytestmark = pytest.mark.docker

ATTACK = r"""set -u
cd /workspace
git config --global safe.directory '*'
lower=TREE  # the tree's host path, as an attacker who knows the harness's layout would guess it
printf 'evil\n' > overwrite.txt
printf 'evil\n' >> append.txt
truncate -s 1 truncate.txt
chmod 666 mode.txt
touch -d '2001-01-01' dated.txt
rm delete.txt
mv rename.txt renamed.txt
ln link.txt linked.txt && printf 'evil\n' >> linked.txt
reached=no
if [ -e "$lower" ]; then reached=yes; fi
printf 'evil\n' > "$lower/overwrite.txt" 2>/dev/null
ln -s "$lower/overwrite.txt" pointer.txt
# The checkpoint's helper runs this filter on `git add -A`: it tries the tree's path from there too.
git config filter.tree.clean "sh -c 'printf evil > $lower/overwrite.txt 2>/dev/null; touch /workspace/.filter-ran; cat'"
printf '*.tree filter=tree\n' > .gitattributes
echo data > x.tree
printf '{"state": "done", "summary": "%s|%s"}' "$(cat overwrite.txt)" "$reached" > "$HARNESS_STATUS_FILE"
"""

NAMES = ("overwrite", "append", "truncate", "mode", "dated", "delete", "rename", "link", "untouched")

# The victim, over the same tree afterwards: every file's digest and mode as its copy shows them.
VICTIM = r"""cd /workspace
for f in *.txt; do printf '%s %s %s\n' "$f" "$(stat -c %a "$f")" "$(sha256sum < "$f" | cut -c1-64)"; done > seen
printf '{"state": "done", "summary": "%s"}' "$(sha256sum < seen | cut -c1-64)" > "$HARNESS_STATUS_FILE"
"""


@pytest.mark.attack(row=32, name="write into a race's shared checkout through its overlay (in place, link, path)")
def test_a_racer_cannot_write_into_the_shared_tree(repo: GitRepo, runtime: str) -> None:
    for name in NAMES:
        (repo.path / f"{name}.txt").write_text(f"{name} as the base has it\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "files of the tree")
    base = repo.git("rev-parse", "HEAD")
    tree = tree_dir(seed_dir(repo.path), base)
    # What a copy over an untouched tree shows: the victim's view, taken before any attack, is the reference.
    before = start_seeded(repo, "before", VICTIM, runtime=runtime)
    assert before.status == RunState.COMPLETED, before.error
    assert before.worktree.lower == str(tree)
    tree_before = tree_digest(tree)

    attacker = start_seeded(repo, "attacker", ATTACK.replace("TREE", str(tree)), runtime=runtime)

    assert attacker.status == RunState.COMPLETED, attacker.error
    shown, reached = (attacker.last_summary or "").split("|")
    # Positive controls: the writes landed in the attacker's copy (and its harvest), the filter ran.
    assert shown == "evil"
    assert reached == "no"  # the tree's own path is not in the attacker's container
    branch = "harness/attacker"
    assert repo.git("show", f"{branch}:overwrite.txt") == "evil"
    assert repo.git("show", f"{branch}:linked.txt").endswith("evil")
    assert repo.git("ls-tree", branch, "delete.txt") == "" and repo.git("ls-tree", branch, "renamed.txt") != ""
    assert (run_dir(repo.path, "attacker") / "workspace" / ".filter-ran").exists(), "the filter did not run"
    # The tree, from the host, and through a copy made over it after the attack.
    assert tree_digest(tree) == tree_before
    victim = start_seeded(repo, "victim", VICTIM, runtime=runtime)
    assert victim.status == RunState.COMPLETED, victim.error
    assert victim.worktree.lower == str(tree)
    assert victim.last_summary == before.last_summary
