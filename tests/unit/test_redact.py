import base64
from pathlib import Path

import pytest

from runner.base.output import CappedFile
from runner.base.redact import RedactingSink, Redactor

SECRET = "sk-canary-4f1d9a7c2b"


def feed(chunks: list[bytes], tmp_path: Path) -> str:
    sink = CappedFile(tmp_path / "log", cap=1 << 20)
    redacting = RedactingSink(Redactor({"API_KEY": SECRET}), sink)
    for chunk in chunks:
        redacting.write(chunk)
    redacting.flush()
    sink.close()
    return (tmp_path / "log").read_text()


def test_a_value_printed_whole_is_redacted(tmp_path: Path) -> None:
    out = feed([f"key={SECRET}\n".encode()], tmp_path)
    assert SECRET not in out and "key=[REDACTED:API_KEY]" in out


@pytest.mark.parametrize("split", [1, 5, len(SECRET) - 1])
def test_a_value_split_across_writes_is_redacted(tmp_path: Path, split: int) -> None:
    out = feed([b"a " + SECRET[:split].encode(), SECRET[split:].encode() + b" z\n"], tmp_path)
    assert out == "a [REDACTED:API_KEY] z\n"


def test_a_value_dribbled_one_byte_at_a_time_is_redacted(tmp_path: Path) -> None:
    data = f"x{SECRET}y".encode()
    out = feed([data[i : i + 1] for i in range(len(data))], tmp_path)
    assert out == "x[REDACTED:API_KEY]y"


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc"])
def test_a_base64_encoded_value_is_redacted_at_any_alignment(tmp_path: Path, prefix: bytes) -> None:
    encoded = base64.b64encode(prefix + SECRET.encode() + b"tail")
    out = feed([encoded + b"\n"], tmp_path)
    assert encoded.decode() not in out and "[REDACTED:API_KEY]" in out


def test_ordinary_output_passes_unchanged(tmp_path: Path) -> None:
    text = "all tests passed\n" * 100
    assert feed([text.encode()], tmp_path) == text


def test_text_fields_are_redacted() -> None:
    assert Redactor({"T": SECRET}).text(f"summary with {SECRET}") == "summary with [REDACTED:T]"
    assert Redactor({"T": "abc"}).text("abc") == "abc"  # too short to redact without mangling text
