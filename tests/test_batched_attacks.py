"""Hostile cases against the batched launcher's paths and the commands that complete its record:
non-regular files where a job's record.json should be (the end-of-sweep scan, `sync`), hostile
folder names made from overrides, and interrupts during a batch's bulk close."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import all_runs, run_cli, run_process

REPO = Path(__file__).resolve().parent.parent


def hostile_record_folders(root: Path) -> dict[str, Path]:
    """Folders whose record.json is not a regular file (or loops): what each is, by name."""
    made = {}
    for name in ("fifo", "dir", "dangling", "loop", "elsewhere"):
        (root / name).mkdir(parents=True)
        made[name] = root / name
    os.mkfifo(root / "fifo" / "record.json")  # opened the plain way, this blocks forever
    (root / "dir" / "record.json").mkdir()
    os.symlink("/nonexistent/record.json", root / "dangling" / "record.json")
    os.symlink("record.json", root / "loop" / "record.json")
    (root / "real.json").write_text(json.dumps({"status": "FINISHED", "synced": False}))
    os.symlink(root / "real.json", root / "elsewhere" / "record.json")  # another file's data: not this folder's record
    return made


def test_sync_names_every_record_that_is_not_a_regular_file_and_never_blocks(workdir):
    """A FIFO, a directory, a dangling symlink, a symlink loop or a symlink to another file where a
    job's record.json should be: each named with what it is, one line each, no traceback, exit 1
    (a record it could not read), and the count of records synced is not negative."""
    made = hostile_record_folders(workdir / "multirun")
    proc = run_process(workdir, "sync", str(workdir / "multirun"), timeout=60)  # a real process: a FIFO open must not hang the test
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out and "-1 record" not in out, out
    for name, what in (("fifo", "a FIFO"), ("dir", "a directory"), ("dangling", "a symlink"), ("loop", "a symlink"), ("elsewhere", "a symlink")):
        lines = [line for line in proc.stderr.splitlines() if str(made[name]) in line]
        assert len(lines) == 1 and what in lines[0], (name, proc.stderr)
    assert "0 record(s) synced, 0 skipped, 5 failed." in proc.stdout, proc.stdout
    assert not (workdir / "mlflow.db").exists()  # nothing read: nothing uploaded, not even a store made


def test_sync_of_a_folder_that_does_not_exist_is_an_error_not_nothing_to_sync(workdir):
    proc = run_process(workdir, "sync", str(workdir / "no-such-sweep"), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no-such-sweep" in proc.stderr and "Traceback" not in proc.stderr and "Nothing to sync" not in proc.stdout


def test_sync_accepts_the_record_file_itself_and_refuses_a_fifo_named_so(workdir):
    """`sync DIR/record.json` means that job's folder; a FIFO given as the path is refused, not opened."""
    made = hostile_record_folders(workdir / "multirun")
    proc = run_process(workdir, "sync", str(made["fifo"] / "record.json"), timeout=60)
    assert proc.returncode == 1 and "a FIFO" in proc.stderr and "Traceback" not in proc.stderr, proc.stdout + proc.stderr


def test_the_end_of_sweep_scan_follows_no_symlink_and_opens_no_fifo(tmp_path):
    """runner/sweep.py's scan for this sweep's unsynced records, over a sweep folder holding two
    symlink loops (a walk that follows them visits 2^40 paths), a link to / and a FIFO, a
    directory and a dangling link named record.json: it ends at once and finds the one unsynced
    record of this sweep (and not another sweep's)."""
    sweep = tmp_path / "sw"
    hostile_record_folders(sweep)
    for name, target in (("a", "."), ("b", "."), ("root", "/")):
        os.symlink(target, sweep / name)
    for job, parent in (("0", "P"), ("1", "other")):
        (sweep / job).mkdir()
        (sweep / job / "record.json").write_text(json.dumps({"status": "FINISHED", "synced": False, "tags": {"mlflow.parentRunId": parent}}))
    code = f"from pathlib import Path; from runner.sweep import _unsynced_jobs; print(_unsynced_jobs(Path({str(sweep)!r}), 'P'))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['0']"
