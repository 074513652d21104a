"""Open-file-description record locks (F_OFD_SETLK) on whole files: the kernel drops one with the last
descriptor of the file description that took it, i.e. when its process dies (kill -9, reboot), and answers
"is it held?" (F_OFD_GETLK) without the asker taking it, so a reader can never make a taker fail."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

# struct flock (Linux, 64-bit off_t): l_type, l_whence, l_start, l_len, l_pid, padding.
_FLOCK = struct.Struct("hhqqi4x")


def _whole_file(lock_type: int) -> bytes:
    return _FLOCK.pack(lock_type, os.SEEK_SET, 0, 0, 0)  # l_len 0: to the end; l_pid must be 0 (OFD)


def try_lock(fd: int) -> bool:
    """Take the write lock of the open file `fd` without waiting; False when someone else holds it.
    Raises OSError for any other failure."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _whole_file(fcntl.F_WRLCK))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def is_held(path: Path) -> bool:
    """Whether some open file description (any process, this one included) holds the lock of `path`.
    Raises OSError when the file exists but cannot be asked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _whole_file(fcntl.F_WRLCK))
    finally:
        os.close(fd)
    return bool(_FLOCK.unpack(answer)[0] != fcntl.F_UNLCK)
