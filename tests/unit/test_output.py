import base64
import os
import random
from pathlib import Path

import pytest

from runner.base.output import TRUNCATION_MARKER, CappedFile, neutralise
from runner.base.redact import RedactingSink, Redactor


@pytest.mark.parametrize(
    "raw",
    ["\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "\x1b]52;c;ZWNobyBoaQ==\x07", "\x9b31m", "a\rb", "\x1bP+q\x1b\\", "\x00\x7f"],
)
def test_terminal_control_sequences_are_made_visible(raw: str) -> None:
    shown = neutralise(f"before {raw} after")
    assert not any(ch in shown for ch in "\x1b\x07\x9b\r\x00\x7f")
    assert shown.startswith("before ") and shown.endswith(" after")


def test_ordinary_text_tabs_and_newlines_pass() -> None:
    text = "line 1\n\tindented ünïcode ✓\n"
    assert neutralise(text) == text


def test_capped_file_keeps_the_cap_and_says_how_much_it_dropped(tmp_path: Path) -> None:
    sink = CappedFile(tmp_path / "log", cap=10)
    for _ in range(5):
        sink.write(b"0123456789")
    sink.close()
    data = (tmp_path / "log").read_text()
    assert data == "0123456789" + TRUNCATION_MARKER.format(cap=10, dropped=40)
    assert sink.truncated and sink.written == 10


SECRET = "sk-live-7Hq2xZp9Lw"


def live_sink(tmp_path: Path) -> tuple[RedactingSink, CappedFile]:
    log = CappedFile(tmp_path / "log", cap=1 << 20)
    return RedactingSink(Redactor({"KEY": SECRET}), log), log


def test_capped_file_writes_reach_the_file_before_close(tmp_path: Path) -> None:
    # `logs --follow` and the hud read the file while the agent runs: nothing may wait in a buffer.
    sink = CappedFile(tmp_path / "log", cap=1 << 20)
    sink.write(b"step 1\n")
    assert (tmp_path / "log").read_bytes() == b"step 1\n"
    sink.write(b"step 2\n")
    assert (tmp_path / "log").read_bytes() == b"step 1\nstep 2\n"
    sink.close()
    sink.close()  # a second close is harmless


def test_a_complete_line_passes_the_redactor_at_once(tmp_path: Path) -> None:
    redacting, log = live_sink(tmp_path)
    redacting.write(b"compiling module 1 of 8\n")
    assert (tmp_path / "log").read_bytes() == b"compiling module 1 of 8\n"
    redacting.write(b"done, no errors.")
    assert (tmp_path / "log").read_bytes().endswith(b"done, no errors.")
    log.close()


def test_only_a_possible_start_of_a_secret_is_held_back(tmp_path: Path) -> None:
    redacting, log = live_sink(tmp_path)
    redacting.write(b"token: " + SECRET[:6].encode())
    assert (tmp_path / "log").read_bytes() == b"token: "  # "sk-liv" could begin the secret
    redacting.write(SECRET[6:].encode() + b" ok\n")
    assert (tmp_path / "log").read_bytes() == b"token: [REDACTED:KEY] ok\n"
    redacting.write(b"sk-")  # a prefix, then text that is not the secret: released with it
    redacting.write(b"other\n")
    assert (tmp_path / "log").read_bytes().endswith(b" ok\nsk-other\n")
    log.close()


def test_redaction_across_random_splits_matches_redacting_the_whole_stream(tmp_path: Path) -> None:
    rng = random.Random(7)
    encoded = base64.b64encode(b"ab" + SECRET.encode() + b"cd")
    fillers = [b" ", b"\n", b".", b", ", b"s", b"sk", b"sk-l", SECRET[:-1].encode() + b"\n"]
    stream = b"".join(rng.choice([*fillers, SECRET.encode(), encoded]) for _ in range(400))
    redactor = Redactor({"KEY": SECRET})
    for attempt in range(30):
        log = CappedFile(tmp_path / f"log{attempt}", cap=1 << 20)
        redacting = RedactingSink(redactor, log)
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 200)))
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            redacting.write(stream[start:end])
        redacting.flush()
        log.close()
        assert (tmp_path / f"log{attempt}").read_bytes() == redactor.bytes(stream)


def test_a_flood_is_written_without_fsync_and_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fsync(fd: int) -> None:
        raise AssertionError("a log write must not fsync")

    monkeypatch.setattr(os, "fsync", no_fsync)
    monkeypatch.setattr(os, "fdatasync", no_fsync)
    log = CappedFile(tmp_path / "log", cap=4 << 20)
    redacting = RedactingSink(Redactor({"KEY": SECRET}), log)
    chunk = b"y" * 65535 + b"\n"
    for _ in range(256):  # 16 MiB
        redacting.write(chunk)
    redacting.flush()
    log.close()
    assert log.written == 4 << 20 and log.dropped == (16 << 20) - (4 << 20)
