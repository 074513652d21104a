import pytest

from runner.base.errors import UsageError
from runner.base.limits import parse_duration, parse_size
from runner.base.names import validate_session


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "/etc",
        "-rf",
        "",
        "a\0b",
        "x" * 65,
        "a/b",
        "..",
        ".hidden",
        "ünï",
        "a b",
        "x.lock",
        "a..b",
        "trailing.",
        "new\nline",
    ],
)
def test_unsafe_session_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="invalid session name"):
        validate_session(name)


@pytest.mark.parametrize("name", ["nightly", "nightly-auth", "a", "v1.2_fix", "x" * 64])
def test_safe_session_names_pass(name: str) -> None:
    assert validate_session(name) == name


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5h", 5400), ("500ms", 0.5), ("1d", 86400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, option="--x") == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("512m", 512 * 1024**2), ("2g", 2 * 1024**3), ("2GiB", 2 * 1024**3), ("1024", 1024), ("64k", 65536)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text, option="--x") == size


@pytest.mark.parametrize("text", ["", "abc", "-5m", "0", "5 parsecs", "1e9"])
def test_malformed_limits_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text, option="--iteration-timeout")
    with pytest.raises(UsageError):
        parse_size(text, option="--memory")
