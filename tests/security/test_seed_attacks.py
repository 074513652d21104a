"""Attack row 31: a racer writes into the repository's shared seed (runner/loop/seed.py).

Two racers of one repository borrow the objects of one seed. The victim runs first (its copy made from the
seed); then the attacker's agent tries every write it can think of into the seed, as mounted in its container
(/harness-seed): overwrite, truncate, append to and delete a pack, add a pack or a loose object, rewrite the
seed's alternates, config, refs and packed-refs, push into it, chmod it, rename it, remount it; and it plants a
git filter in its own copy that tries the same from the checkpoint's helper container. Positive controls: the
same tools write the same kinds of files in the attacker's own copy (objects, alternates, refs, config), read
the seed, and the planted filter does run in the helper. Then, from the host: the seed is byte for byte and
mode for mode what it was, the user's repository's refs (but the attacker's new branch), config and hooks are
unchanged, and the victim's copy is untouched.
"""

from __future__ import annotations

import pytest

from runner.base.paths import run_dir, seed_dir
from runner.record.models import RunState
from tests.helpers import GitRepo
from tests.seeded import start_seeded, tree_digest

pytestmark = pytest.mark.docker

ATTACK = r"""set -u
S=/harness-seed
cd /workspace
git config --global safe.directory '*'  # git's own ownership check must not be what stops the probes
out=/workspace/probes.txt
: > "$out"
probe() {  # probe NAME CMD...: "blocked" unless the write went through
  name=$1; shift
  if ( "$@" ) >/dev/null 2>&1; then echo "$name: WROTE" >> "$out"; else echo "$name: blocked" >> "$out"; fi
}
control() {  # control NAME CMD...: the same kind of write where it is allowed
  name=$1; shift
  if ( "$@" ) >/dev/null 2>&1; then echo "$name: ok" >> "$out"; else echo "$name: FAILED" >> "$out"; fi
}
for p in "$S"/objects/pack/*.pack; do pack=$p; break; done
head=$(git rev-parse HEAD)
echo evil > evil.txt && git add evil.txt && git commit -q -m evil && evil=$(git rev-parse HEAD)

probe overwrite-pack sh -c "printf garbage > '$pack'"
probe append-pack sh -c "printf garbage >> '$pack'"
probe truncate-pack truncate -s 0 "$pack"
probe delete-pack rm "$pack"
probe rename-pack mv "$pack" "$pack.x"
probe new-pack sh -c "printf x > $S/objects/pack/pack-evil.pack"
probe loose-object sh -c "mkdir -p $S/objects/ab && printf x > $S/objects/ab/cdef"
probe hash-object-into-seed sh -c "echo planted | git --git-dir=$S hash-object -w --stdin"
probe seed-alternates sh -c "printf '/workspace/.git/objects\n' > $S/objects/info/alternates"
probe seed-config git --git-dir=$S config core.fsmonitor "touch /tmp/fired"
probe seed-ref git --git-dir=$S update-ref refs/heads/main "$evil"
probe packed-refs sh -c "printf '%s refs/heads/main\n' $evil > $S/packed-refs"
probe push-into-seed git push -q "$S" "$evil:refs/heads/main"
probe seed-hooks sh -c "mkdir -p $S/hooks && printf '#!/bin/sh\ntouch /tmp/fired\n' > $S/hooks/post-update"
probe chmod-seed chmod -R a+w "$S/objects"
probe rename-seed mv "$S/objects" "$S/objects.x"
probe remount mount -o remount,rw "$S"

control reads-seed sh -c "cat '$pack' > /dev/null && git cat-file -e $head^{tree}"
control own-object sh -c "echo mine | git hash-object -w --stdin"
control own-ref git update-ref refs/heads/mine "$evil"
control own-config git config harness.test yes
control own-alternates sh -c "printf '$S/objects\n' > .git/objects/info/alternates"
control own-truncate sh -c "cp evil.txt t1 && truncate -s 0 t1"
control own-rename sh -c "cp evil.txt t2 && mv t2 t3 && rm t3 t1"
control own-chmod chmod a+w evil.txt

# The checkpoint's helper runs this filter on `git add -A`: it tries the seed from there too.
git config filter.seed.clean "sh -c 'printf x > $S/objects/pack/from-helper.pack 2>/dev/null; \
  printf x > $S/objects/info/alternates 2>/dev/null; touch /workspace/.filter-ran; cat'"
printf '*.seed filter=seed\n' > .gitattributes
echo data > x.seed
printf '{"state": "done", "summary": "probed"}' > "$HARNESS_STATUS_FILE"
"""


def _user_state(repo: GitRepo, ignore: str) -> tuple[str, dict[str, tuple[int, str]], str]:
    refs = "\n".join(ln for ln in repo.git("for-each-ref").splitlines() if not ln.endswith(ignore))
    hooks = tree_digest(repo.path / ".git" / "hooks")
    return refs, hooks, (repo.path / ".git" / "config").read_text()


@pytest.mark.attack(row=31, name="write into the shared seed of a race (objects, refs, config, alternates)")
def test_a_racer_cannot_write_into_the_shared_seed(repo: GitRepo, runtime: str) -> None:
    victim_script = """echo mine > victim.txt; printf '{"state": "done", "summary": "v"}' > "$HARNESS_STATUS_FILE" """
    victim = start_seeded(repo, "victim", victim_script, runtime=runtime)
    assert victim.status == RunState.COMPLETED, victim.error
    seed = seed_dir(repo.path)
    assert victim.worktree.seed == str(seed)
    seed_before = tree_digest(seed)
    victim_before = tree_digest(run_dir(repo.path, "victim") / "workspace")
    user_before = _user_state(repo, "refs/heads/harness/attacker")

    attacker = start_seeded(repo, "attacker", ATTACK, runtime=runtime)

    assert attacker.status == RunState.COMPLETED, attacker.error
    probes = dict(ln.split(": ", 1) for ln in repo.git("show", "harness/attacker:probes.txt").splitlines())
    controls = {name: result for name, result in probes.items() if result in {"ok", "FAILED"}}
    attacks = {name: result for name, result in probes.items() if name not in controls}
    assert len(attacks) == 17 and len(controls) == 8, probes
    assert {name for name, result in attacks.items() if result != "blocked"} == set()
    assert {name for name, result in controls.items() if result != "ok"} == set()
    attacker_copy = run_dir(repo.path, "attacker") / "workspace"
    assert (attacker_copy / ".filter-ran").exists(), "the planted filter did not run in the checkpoint's helper"
    assert tree_digest(seed) == seed_before
    assert tree_digest(run_dir(repo.path, "victim") / "workspace") == victim_before
    assert _user_state(repo, "refs/heads/harness/attacker") == user_before
    assert repo.git("show", "harness/victim:victim.txt") == "mine"
    repo.git("fsck", "--connectivity-only", "--no-dangling")
