"""`python -m runner sync [DIR ...]`: upload job records that did not reach MLflow, exactly once.

A job whose tracking store went away keeps its full record in its output directory
(record.json, metrics.csv, result.json, plots). sync completes the same MLflow run (or creates
one if the store never saw it): params and metric points the store does not hold yet, final
metrics, artifacts, the status. Then the record is marked synced, so a second sync does nothing.

record.json is data, not trusted (anyone can write one): only regular files inside the job's own
folder are uploaded (names without a path, no symlinks), an existing run is completed only when
it was made for this folder (its `output_dir` tag), and the store is the one the user names
(`--tracking-uri`, else MLFLOW_TRACKING_URI or ./mlflow.db); a record that names another store is
uploaded there only when the user confirms it at a terminal or passes that URI.
A run that is still alive (a heartbeat or a record written within the last minute) is left alone.
"""
from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from pathlib import Path

from runner.job_folder import FILE, JobFolder

STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")
ALIVE_WITHIN = 60.0  # seconds: the same staleness as `reap`'s default (heartbeats every 10 s)


class SkipRecord(Exception):
    """This record is not uploaded now; the message says why and what to do."""


def main(argv: list[str]) -> int:
    from runner.errors import UserError
    from runner.store.uri import resolve_uri

    parser = argparse.ArgumentParser(prog="python -m runner sync", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", help="job output folders, or folders to search (default: outputs/ and multirun/ here)")
    parser.add_argument("--tracking-uri", default=None,
                        help="the store to upload to (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here); "
                             "a record made for another store is uploaded only to the URI given here, or after confirmation")
    parser.add_argument("--yes", action="store_true", help="upload records to the store each names without asking (you trust them)")
    args = parser.parse_args(argv)
    try:
        uri = resolve_uri(args.tracking_uri)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    roots = [Path(d) for d in args.dirs] or [p for p in (Path("outputs"), Path("multirun")) if p.exists()]
    try:
        records = _record_folders(roots)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    loaded, unread = [], 0
    for folder in records:
        try:
            loaded.append(_load(folder))
        except Exception as exc:  # not a regular file, not JSON, not ours: say so and go on with the others
            unread += 1
            print(f"could not sync {folder}: its {FILE} {_why_unreadable(exc)}", file=sys.stderr)
    pending = [r for r in loaded if not r.data.get("synced")]
    if not pending and not unread:
        print(f"Nothing to sync: {len(records)} record(s) found, all already in MLflow.")
        return 0
    skipped, failures = 0, 0
    for record in pending:
        try:
            target = _target_uri(record, uri, explicit=args.tracking_uri is not None, trust=args.yes)
            run_id = upload(record, target)
            print(f"synced {record.folder} -> run {run_id} ({record.data['status']}) in {target}")
        except SkipRecord as exc:
            skipped += 1
            print(f"skipped {record.folder}: {exc}", file=sys.stderr)
        except Exception as exc:
            failures += 1
            print(f"could not sync {record.folder}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
    print(f"{len(pending) - failures - skipped} record(s) synced, {skipped} skipped, {failures + unread} failed.")
    return 1 if failures or skipped or unread else 0


def _record_folders(roots: list[Path]) -> list[Path]:
    """The job folders to look at: a root holding record.json is that job's folder; a root that
    is a record.json is its folder's; any other folder is searched (runner/record_scan.py: no
    symlink followed). A root that is missing or not a folder is the user's mistake (UserError)."""
    from runner.errors import UserError
    from runner.record_scan import record_folders

    found: set[Path] = set()
    for root in roots:
        if root.name == FILE and os.path.lexists(root):
            found.add(root.parent)  # whatever it is: reading it says
        elif os.path.lexists(root / FILE):
            found.add(root)
        elif root.is_dir():
            found.update(record_folders(root))
        elif os.path.lexists(root):
            raise UserError(f"{str(root)!r} is not a folder: give job output folders, or folders that hold them (default: outputs/ and multirun/ here).")
        else:
            raise UserError(f"{str(root)!r} does not exist: give job output folders, or folders that hold them (default: outputs/ and multirun/ here).")
    return sorted(found)


def _why_unreadable(exc: Exception) -> str:
    from runner.record_scan import UnreadableRecord

    if isinstance(exc, UnreadableRecord):
        return f"{exc}; nothing was uploaded for this folder."
    if isinstance(exc, ValueError):
        return f"is not a job record ({str(exc)[:200]}); nothing was uploaded for this folder."
    return f"cannot be read ({type(exc).__name__}: {str(exc)[:200]})."


def _load(folder: Path) -> JobFolder:
    """record.json read as untrusted data: a regular file (not a link) of at most 16 MiB holding a JSON object."""
    import json

    from runner.record_scan import read_record_text

    record = JobFolder.__new__(JobFolder)
    record.folder = Path(folder)
    record.data = json.loads(read_record_text(record.folder / FILE))
    if not isinstance(record.data, dict):
        raise ValueError("not a JSON object")
    return record


def _target_uri(record: JobFolder, uri: str, explicit: bool, trust: bool) -> str:
    """The user's store. A record that names another one is shown; it goes there only when the
    user says so (at a terminal, or --yes); with --tracking-uri the user's URI wins."""
    from runner.trust import redact_uri

    named = record.data.get("tracking_uri")
    if explicit or not isinstance(named, str) or named == uri:
        return uri
    if trust:
        return named
    question = (f"{record.folder / FILE} was recorded for the tracking store {redact_uri(named)}, not {redact_uri(uri)}.")
    if sys.stdin.isatty():
        answer = input(f"{question} Upload it to {redact_uri(named)}? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            return named
    raise SkipRecord(f"{question} Run `python -m runner sync --tracking-uri URI {record.folder}` with the store you mean.")


def _inside(folder: Path, name: str, what: str) -> Path:
    """folder/name when name is a plain file name of a regular file, not a symlink, in folder."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise SkipRecord(f"{what} {name!r} is not a file name inside the job's folder; record.json is not trusted for paths.")
    path = folder / name
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise SkipRecord(f"{what} {name!r} is {kind}; only regular files inside the job's folder are uploaded.")
    return path


def _same_folder(tag, folder: Path) -> bool:
    try:
        return bool(tag) and Path(tag).resolve() == folder
    except (OSError, ValueError):
        return False


def _alive(record: JobFolder, run) -> float | None:
    """Seconds since the run last showed life, when that is within ALIVE_WITHIN; else None."""
    if record.data.get("status") != "RUNNING":
        return None
    from runner.store.stream import HEARTBEAT_TAG

    now, marks = time.time(), []
    beat = run.data.tags.get(HEARTBEAT_TAG) if run is not None else None
    if beat:
        try:
            marks.append(float(beat))
        except ValueError:
            pass
    for name in (FILE, "metrics.csv"):
        try:
            marks.append(os.lstat(record.folder / name).st_mtime)
        except OSError:
            pass
    age = now - max(marks, default=0.0)
    return age if age < ALIVE_WITHIN else None


def upload(record: JobFolder, uri: str) -> str:
    from runner.store import connect
    from runner.store.uri import check_reachable

    d = record.data
    status = d.get("status")
    if status not in STATUSES:
        raise SkipRecord(f"its status {status!r} is not one of {', '.join(STATUSES)}.")
    folder = record.folder.resolve()
    artifacts = [_inside(folder, name, "artifact") for name in d.get("artifacts", []) if (folder / str(name)).exists() or os.path.islink(folder / str(name))]
    points = []  # everything read and checked before the store is touched: a refusal leaves nothing behind
    if os.path.lexists(folder / "metrics.csv"):
        _inside(folder, "metrics.csv", "the metric history")  # before reading it: no symlink to another file
        points = record.metric_points()
    check_reachable(uri)
    client = connect(uri, in_process=True)
    experiment_id = client.open_experiment(str(d.get("experiment", "runner")))
    run = None
    run_id = d.get("synced_run_id") or d.get("run_id")
    if isinstance(run_id, str) and run_id:
        run = client.find_run(run_id)  # None: the store never saw this run
    if run is not None and not _same_folder(run.data.tags.get("output_dir"), folder):
        run = None  # a run made for another folder is never completed from this record: a new one instead
    age = _alive(record, run)
    if age is not None:
        raise SkipRecord(f"the run is still alive (last sign of life {age:.0f} s ago); sync it once it has ended.")
    if run is None:
        tags = {str(k): str(v) for k, v in (d.get("tags") or {}).items()}
        tags["output_dir"] = str(folder)
        run = client.get_run(client.create_run(experiment_id, str(d.get("run_name", folder.name)), tags))
        record.update(synced_run_id=run.info.run_id)
    run_id = run.info.run_id
    try:
        _complete(client, record, run, points, artifacts, status)
    except BaseException:
        try:  # whatever stopped the upload, the run is not left RUNNING by sync
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, "error", "upload by `python -m runner sync` incomplete: run it again")
                client.set_terminated(run_id, "FAILED")
        except Exception:
            pass
        raise
    record.update(synced=True)
    return run_id


def _complete(client, record: JobFolder, run, points, artifacts, status: str) -> None:
    d, folder, run_id = record.data, record.folder.resolve(), run.info.run_id
    have_params = run.data.params
    params = [(str(k), str(v)) for k, v in (d.get("params") or {}).items() if k not in have_params]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    have: dict[str, set[int]] = {}
    for key in {k for k, _, _, _ in points}:
        have[key] = {m.step for m in client.get_metric_history(run_id, key)}
    missing = [(k, v, t, s) for k, v, t, s in points if s not in have[k]]
    for i in range(0, len(missing), 1000):
        client.log_batch(run_id, metrics=missing[i : i + 1000])
    ts = max([t for _, _, t, _ in points], default=0)
    tags = [("error", str(d["error"])[:5000])] if d.get("error") else []
    tags.append(("synced_from", str(folder)))
    have_final = run.data.metrics  # a final metric the run already holds is not logged again (a second point)
    finals = [(str(k), float(v), ts, 0) for k, v in (d.get("final_metrics") or {}).items() if not _same_value(have_final.get(str(k)), v)]
    client.log_batch(run_id, metrics=finals, tags=tags)
    present = {a.path for a in client.list_artifacts(run_id)}
    for path in artifacts:
        if path.name not in present:
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status if status != "RUNNING" else "KILLED")


def _same_value(have, value) -> bool:
    """The store's latest value of a metric is the record's (NaN equal to NaN)."""
    import math

    try:
        a, b = float(have), float(value)
    except (TypeError, ValueError):
        return False
    return a == b or (math.isnan(a) and math.isnan(b))
