from pathlib import Path

import pytest

from runner.output import TRUNCATION_MARKER, CappedFile, neutralise


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
