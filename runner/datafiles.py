"""Opening a user's data file safely: for problem plugins, built-in and third-party alike.

A path from the config may name anything: a FIFO (reading it waits for a writer forever), a
character device (`/dev/zero` never ends), a directory, a symlink loop, or a regular file far
larger than the reader can hold. `open_data_file` refuses all of these at once, before reading a
byte, with a message that names the config key, the path and what it is; it opens without
blocking (a FIFO cannot stall it) and checks what it opened, not what the name pointed to a
moment earlier. `read_data_bytes` / `read_data_text` then read at most the size limit.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

MiB = 1 << 20
DEFAULT_LIMIT = 1024 * MiB  # a text file larger than this is parsed in Python far too slowly anyway


class DataFileError(ValueError):
    """The path is not a regular file the reader can take; the message says why."""


def _what(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _size_text(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n} bytes"


def open_data_file(path: str | os.PathLike, key: str, expected: str, limit: int | None = DEFAULT_LIMIT) -> int:
    """An open file descriptor (read-only) of the regular file at `path`, or DataFileError.

    `key`: the config key that named it (`problem.data`); `expected`: what the reader takes (said
    in every message); `limit`: the largest size accepted in bytes (None: no limit)."""
    p = Path(path).expanduser()
    where = f"{key}={str(path)!r}"
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        import errno

        reason = {errno.ENOENT: "no such file", errno.ELOOP: "a symlink loop (too many levels of symbolic links)",
                  errno.EACCES: "permission denied", errno.EISDIR: "a directory", errno.ENOTDIR: "a path through something that is not a directory",
                  errno.ENXIO: "a socket or a device without a reader", errno.ENAMETOOLONG: "a name too long"}.get(exc.errno, exc.strerror)
        raise DataFileError(f"{where} cannot be read: {reason}. Expected {expected}.") from None
    try:
        info = os.fstat(fd)  # what was opened, not what the name pointed to a moment before
        if not stat.S_ISREG(info.st_mode):
            raise DataFileError(f"{where} is {_what(info.st_mode)}, not a regular file. Expected {expected}.")
        if limit is not None and info.st_size > limit:
            raise DataFileError(f"{where} is {_size_text(info.st_size)}, more than this reader's limit of "
                                f"{_size_text(limit)}. Expected {expected}.")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def check_data_file(path: str | os.PathLike, key: str, expected: str, limit: int | None = DEFAULT_LIMIT) -> Path:
    """The same checks, for readers that need a path (numpy's memory map, scipy): the resolved
    path of a regular file within the limit."""
    os.close(open_data_file(path, key, expected, limit))
    return Path(path).expanduser().resolve()


def read_data_bytes(path: str | os.PathLike, key: str, expected: str, limit: int | None = DEFAULT_LIMIT) -> bytes:
    """The whole file, at most `limit` bytes (a file that grows while it is read is cut there and refused)."""
    fd = open_data_file(path, key, expected, limit)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read() if limit is None else fh.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise DataFileError(f"{key}={str(path)!r} grew past this reader's limit of {_size_text(limit)} while it was read. Expected {expected}.")
    return data


def read_data_text(path: str | os.PathLike, key: str, expected: str, limit: int | None = DEFAULT_LIMIT,
                   encoding: str = "utf-8") -> str:
    data = read_data_bytes(path, key, expected, limit)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{key}={str(path)!r} is not {encoding} text (byte {exc.start}: {exc.reason}). Expected {expected}.") from None
