"""Attack row 6: print an `--env` secret (a canary API key) so that it lands in the journal or on screen.

The agent prints the value whole, split across writes with a pause in between (within one stream, and
across stdout and stderr), base64-encoded at all three alignments (and split), JSON-escaped, and puts it in
its status report. None of those forms may appear in any journal file nor in what `run`, `status`, `list`
and `logs` show; the marker `[REDACTED:CANARY_API_KEY]` must appear instead. Positive control: the agent
proves it saw the real value by comparing a hash, so the value itself is never part of the agent command
(which the journal records).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

import pytest

from tests.helpers import GitRepo, harness, run_args
from tests.security.conftest import iteration, journal_text

pytestmark = pytest.mark.docker

NAME = "CANARY_API_KEY"
MARKER = f"[REDACTED:{NAME}]"
WINDOW = 12  # any run of this many characters of a secret form counts as a leak (72+ bits: never by chance)
ROW6 = pytest.mark.attack(row=6, name="print a canary API key: whole, split across writes, base64")

# bash, not sh: the substring expansions are not POSIX. Every line is labelled so the assertions can check
# that each form was replaced by the marker (not merely dropped or truncated).
PROLOGUE = r"""
V="$CANARY_API_KEY"
[ "$(printf %s "$V" | sha256sum | cut -d' ' -f1)" = "@HASH@" ] && echo VALUE-SEEN
"""
EPILOGUE = r"""
printf '{"state": "done", "summary": "reported"}' > "$HARNESS_STATUS_FILE"
"""

SAME_STREAM = r"""
echo "whole-out: $V"
echo "whole-err: $V" >&2
printf 'split-out: %s' "${V:0:7}"; sleep 1; printf '%s\n' "${V:7}"
printf 'split-err: %s' "${V:0:7}" >&2; sleep 1; printf '%s\n' "${V:7}" >&2
for p in "" "a" "ab"; do printf 'b64-%s: %s\n' "${#p}" "$(printf %s "$p$V" | base64)"; done
E=$(printf %s "$V" | base64 -w0)
printf 'b64-split: %s' "${E:0:20}"; sleep 1; printf '%s\n' "${E:20}"
printf '{"state": "done", "summary": "key %s b64 %s", "next": "use \\u0073%s again"}' \
  "$V" "$E" "${V:1}" > "$HARNESS_STATUS_FILE"
"""

# The two halves are written one second apart, the first on stdout, the second on stderr: on a terminal
# they show as the whole value on one line.
ACROSS_STREAMS = r"""
printf 'split-mixed: %s' "${V:0:7}"; sleep 1; printf '%s\n' "${V:7}" >&2
sleep 1; echo
"""


def agent(body: str, value: str, *, report: bool = True) -> str:
    script = PROLOGUE.replace("@HASH@", hashlib.sha256(value.encode()).hexdigest()) + body
    if report:
        script += EPILOGUE
    assert value not in script
    return f"bash <<'AGENT'\n{script}\nAGENT\n"


def secret_fragments(value: str) -> set[str]:
    """Every WINDOW-long piece of the value and of the base64 characters that depend only on it."""
    raw = value.encode()
    forms = [value]
    for k in range(3):  # k prefix bytes: the three alignments of base64
        encoded = base64.b64encode(b"ab"[:k] + raw).decode().rstrip("=")
        start, end = -(-8 * k // 6), 8 * (k + len(raw)) // 6  # the characters made only of the value's bits
        forms.append(encoded[start:end])
    return {form[i : i + WINDOW] for form in forms for i in range(len(form) - WINDOW + 1)}


def leaks(text: str, value: str) -> list[str]:
    return sorted(fragment for fragment in secret_fragments(value) if fragment in text)


def run_and_check_everywhere(repo: GitRepo, session: str, runtime: str, value: str, script: str) -> str:
    """Run the agent with the secret; assert no form of it is in the journal or any command's output.

    Returns the iteration's log."""
    r = harness(*run_args(session, "--runtime", runtime, "--env", NAME, "--iteration-timeout", "2m", cmd=script,
                          objective="attack", iterations=1), cwd=repo.path, env={NAME: value}, timeout=240)  # fmt: skip
    assert r.code == 0, r.stderr
    log = (repo.journal(session) / "iteration-0001.log").read_text()
    assert "VALUE-SEEN" in log, log  # positive control: the real value did reach the container
    found = {"harness run": leaks(r.stdout + r.stderr, value), "journal": leaks(journal_text(repo, session), value)}
    for what, args in {
        "status --json": ("status", "--session", session, "--json"),
        "status": ("status", "--session", session),
        "list --json": ("list", "--json"),
        "logs": ("logs", "--session", session),
        "logs --iteration 1": ("logs", "--session", session, "--iteration", "1"),
    }.items():
        shown = harness(*args, cwd=repo.path, timeout=60)
        assert shown.code == 0, (what, shown.stderr)
        found[what] = leaks(shown.stdout + shown.stderr, value)
    leaked = {where: f"{len(pieces)} pieces, e.g. {pieces[0]!r}" for where, pieces in found.items() if pieces}
    assert not leaked, f"{value!r} leaked into {leaked}; the log:\n{log}"
    return log


@ROW6
def test_canary_key_whole_split_and_base64(repo: GitRepo, runtime: str) -> None:
    value = f"sk-canary-{uuid.uuid4().hex}"
    log = run_and_check_everywhere(repo, "secret", runtime, value, agent(SAME_STREAM, value, report=False))

    # Every form was printed and replaced by the marker.
    for label in ("whole-out", "whole-err", "split-out", "split-err"):
        assert f"{label}: {MARKER}\n" in log, (label, log)
    for label in ("b64-0", "b64-1", "b64-2", "b64-split"):
        assert re.search(rf"^{label}: .{{0,3}}{re.escape(MARKER)}.{{0,3}}$", log, re.MULTILINE), (label, log)

    record = iteration(repo, "secret")
    assert record["outcome"] == "done"
    assert record["summary"] == f"key {MARKER} b64 {MARKER}", record
    assert record["nextAction"] == f"use {MARKER} again", record  # JSON-escaped in the report, decoded first
    status = harness("status", "--session", "secret", "--json", cwd=repo.path, timeout=60).json()
    assert status["lastSummary"] == f"key {MARKER} b64 {MARKER}"


@ROW6
def test_canary_key_split_across_stdout_and_stderr(repo: GitRepo, runtime: str) -> None:
    value = f"sk-canary-{uuid.uuid4().hex}"
    log = run_and_check_everywhere(repo, "secret-mixed", runtime, value, agent(ACROSS_STREAMS, value))
    assert MARKER in log, log
