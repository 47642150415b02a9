"""The job folder: the files a job keeps in its Hydra output directory, whatever happens to MLflow.

record.json says which MLflow run the job is, what it logged (params, tags, final metrics,
artifacts) and whether all of it reached the store (`synced`). metrics.csv beside it holds every
metric point as it was produced. `python -m runner sync` uploads a record that did not reach
MLflow, exactly once.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

FILE = "record.json"


class JobFolder:
    """record.json (written atomically on every update) and the metrics.csv beside it."""

    def __init__(self, folder: Path, **data: Any):
        self.folder = Path(folder)
        self.data: dict[str, Any] = {"status": "RUNNING", "synced": False, "final_metrics": {}, "artifacts": [], **data}
        _start_afresh(self.folder)
        self.save()

    @classmethod
    def load(cls, folder: Path) -> "JobFolder":
        record = cls.__new__(cls)
        record.folder = Path(folder)
        record.data = json.loads((record.folder / FILE).read_text())
        return record

    def update(self, **data: Any) -> None:
        self.data.update(data)
        self.save()

    error = None  # the first write that failed (a full disk): the record is then in MLflow only

    def save(self) -> None:
        """Best-effort: a job folder that cannot be written (full disk, read-only) must not stop
        the run or its record in MLflow; the first failure is kept in `error` for the warning."""
        tmp = self.folder / (FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(self.data, indent=2, default=str))
            os.replace(tmp, self.folder / FILE)  # atomic: a hard kill leaves the old or the new one
        except OSError as exc:
            if self.error is None:
                self.error = exc
            try:
                tmp.unlink()
            except OSError:
                pass

    def metric_points(self) -> list[tuple[str, float, int, int]]:
        """(key, value, timestamp_ms, step) of every point in metrics.csv."""
        path = self.folder / "metrics.csv"
        if not path.exists():
            return []
        points = []
        for line in path.read_text().splitlines():
            parts = line.split(",")
            if len(parts) == 4:
                key, step, value, ts = parts
                points.append((key, float(value), int(ts), int(step)))
        return points


# The files a record writes in its folder, besides record.json (replaced atomically) and the figures.
RECORD_FILES = (FILE + ".tmp", "metrics.csv", "result.json", "config.yaml", "traceback.txt")


def _start_afresh(folder: Path) -> None:
    """A new record in this folder: what an earlier job left under the record's file names goes
    first. metrics.csv is appended to, so an old one would mix two jobs' points (a sweep folder
    used again); and a FIFO there (opened for writing it blocks until a reader comes: forever),
    or a symlink (written through to another file), must not be where the record writes.
    Directories are left alone (writing there fails and is reported as a job folder that could
    not be written)."""
    for name in RECORD_FILES:
        path = os.path.join(folder, name)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                os.unlink(path)
        except OSError:
            pass


HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")


def remove_if_only_hydra(folder: Path, job_name: str = "runner", launch_dir: Path | None = None) -> bool:
    """Remove a run folder that holds nothing but what Hydra wrote before the task (its .hydra/
    files and `JOB.log`), then the folders above it that are left empty (`outputs/DATE/`), never
    the launch directory or anything outside it. Only those files are deleted and only empty
    folders removed, so a folder with anything else in it (a user's hydra.run.dir=.) keeps all."""
    folder = Path(folder).absolute()
    stop = Path(launch_dir or Path.cwd()).absolute()
    try:
        for name in (*HYDRA_FILES, f"{job_name}.log"):
            path = folder / name
            if path.is_file() and not path.is_symlink():
                path.unlink()
        (folder / ".hydra").rmdir()
        while folder != stop and stop in folder.parents:
            folder.rmdir()
            folder = folder.parent
    except OSError:  # not empty (or not ours to remove): what is left stays
        return False
    return True
