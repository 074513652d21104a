"""Defensive reads of files an agent could have written (design §4 item 3).

One path component under a directory opened without following links, `O_NOFOLLOW|O_NONBLOCK`,
regular files only, a size cap: a symlink, a FIFO or a huge file can neither redirect, block nor
exhaust the host.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnsafeFileError(Exception):
    """The file is missing, not a regular file, a link, or too large."""


def _open_checked(directory: Path, name: str, max_bytes: int) -> tuple[int, int]:
    if not name or "/" in name or name in {".", ".."} or "\0" in name:
        raise UnsafeFileError(f"{name!r} is not a single path component")
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise UnsafeFileError(f"cannot open directory {directory}: {exc.strerror}") from exc
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd)
    except FileNotFoundError as exc:
        raise UnsafeFileError(f"{name} does not exist") from exc
    except OSError as exc:  # ELOOP: a symlink
        raise UnsafeFileError(f"{name} cannot be opened safely: {exc.strerror}") from exc
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafeFileError(f"{name} is not a regular file")
    if info.st_size > max_bytes:
        os.close(fd)
        raise UnsafeFileError(f"{name} is larger than {max_bytes} bytes ({info.st_size})")
    return fd, info.st_size


def read_untrusted(directory: Path, name: str, *, max_bytes: int) -> bytes:
    """Read `directory/name` defensively; raise UnsafeFileError instead of following or blocking."""
    fd, _ = _open_checked(directory, name, max_bytes)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while we read it
        raise UnsafeFileError(f"{name} is larger than {max_bytes} bytes")
    return data


def copy_untrusted(directory: Path, name: str, dest: Path, *, max_bytes: int) -> int:
    """Copy `directory/name` to the host-private `dest` defensively; return the bytes copied."""
    fd, _ = _open_checked(directory, name, max_bytes)
    copied = 0
    with os.fdopen(fd, "rb") as src, dest.open("wb") as out:
        while chunk := src.read(1024 * 1024):
            copied += len(chunk)
            if copied > max_bytes:
                raise UnsafeFileError(f"{name} is larger than {max_bytes} bytes")
            out.write(chunk)
    return copied
