import os
import threading
from pathlib import Path

import pytest

from runner.base.atomic import write_atomic
from runner.base.saferead import UnsafeFileError, read_untrusted


def test_reads_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text("{}")
    assert read_untrusted(tmp_path, "status.json", max_bytes=10) == b"{}"


def test_refuses_a_symlink_even_to_a_readable_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("TOKEN")
    (tmp_path / "status.json").symlink_to(secret)
    with pytest.raises(UnsafeFileError):
        read_untrusted(tmp_path, "status.json", max_bytes=100)


def test_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "status.json")
    done = threading.Event()
    errors: list[Exception] = []

    def attempt() -> None:
        try:
            read_untrusted(tmp_path, "status.json", max_bytes=100)
        except UnsafeFileError as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=attempt, daemon=True).start()
    assert done.wait(5), "reading a FIFO blocked"
    assert errors and "not a regular file" in str(errors[0])


def test_refuses_an_oversized_file(tmp_path: Path) -> None:
    with (tmp_path / "status.json").open("wb") as handle:
        handle.truncate(1024**3)  # sparse: 1 GiB on paper, nothing on disk
    with pytest.raises(UnsafeFileError, match="larger than"):
        read_untrusted(tmp_path, "status.json", max_bytes=65536)


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".."])
def test_refuses_paths_that_are_not_one_component(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeFileError):
        read_untrusted(tmp_path, name, max_bytes=100)


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "run-summary.json"
    write_atomic(target, "old")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["run-summary.json"]  # no temp file left behind
