"""Finding job records (record.json) under a folder and reading one, for code that scans folders
it does not own: the end-of-sweep scan for unsynced records (runner/sweep.py) and
`python -m runner sync`.

A folder may hold anything: a FIFO named record.json (opened the plain way, it blocks until a
writer comes: forever), a directory, a dangling symlink, a symlink loop, links to `.` or `/` (a
walk that follows links visits 2^depth paths, or the whole disk). The walk follows no symlink;
a record is read only when it is a regular file in the folder itself (not a link), opened
without blocking and checked again after opening.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

from runner.datafiles import _what
from runner.job_folder import FILE

LIMIT = 16 << 20  # ours are a few KiB


class UnreadableRecord(ValueError):
    """record.json is not a readable record; the message says what it is ("is a FIFO ...")."""


def record_folders(root: Path) -> Iterator[Path]:
    """Every folder under `root` (itself included) with an entry named record.json, whatever that
    entry is (reading it says), in a stable order; symlinks are not followed."""
    for here, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        if FILE in files or FILE in dirs:
            yield Path(here)


def read_record_text(path: Path) -> str:
    """The text of the regular file `path`, or UnreadableRecord saying what is there instead."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise UnreadableRecord(f"cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise UnreadableRecord(f"is a symlink (to {target!r}), not the job's own file; only a regular record.json in the job's folder is read")
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableRecord(f"is {_what(info.st_mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UnreadableRecord(f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)  # what was opened: not swapped for a FIFO since the lstat
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableRecord(f"is {_what(info.st_mode)}, not a regular file")
        if info.st_size > LIMIT:
            raise UnreadableRecord(f"is {info.st_size >> 20} MiB, far more than a job record (at most {LIMIT >> 20} MiB is read)")
        data = fh.read(LIMIT + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableRecord(f"is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
