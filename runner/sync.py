"""`python -m runner sync [DIR ...]`: upload job records that did not reach MLflow, exactly once.

A job whose tracking store went away keeps its full record in its output directory
(record.json, metrics.csv, result.json, plots). sync completes the same MLflow run (or creates
one if the store never saw it): params and metric points the store does not hold yet, final
metrics, artifacts, the status. Then the record is marked synced, so a second sync does nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runner.job_folder import FILE, JobFolder


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner sync", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", help="job output folders, or folders to search (default: outputs/ and multirun/ here)")
    parser.add_argument("--tracking-uri", default=None, help="upload here instead of the store the job used")
    args = parser.parse_args(argv)
    roots = [Path(d) for d in args.dirs] or [p for p in (Path("outputs"), Path("multirun")) if p.exists()]
    records = sorted({p.parent for root in roots for p in ([root / FILE] if (root / FILE).exists() else root.rglob(FILE))})
    pending = [r for r in (JobFolder.load(d) for d in records) if not r.data.get("synced")]
    if not pending:
        print(f"Nothing to sync: {len(records)} record(s) found, all already in MLflow.")
        return 0
    failures = 0
    for record in pending:
        try:
            run_id = upload(record, args.tracking_uri)
            print(f"synced {record.folder} -> run {run_id} ({record.data['status']})")
        except Exception as exc:
            failures += 1
            print(f"could not sync {record.folder}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
    print(f"{len(pending) - failures} record(s) synced, {failures} failed.")
    return 1 if failures else 0


def upload(record: JobFolder, uri: str | None = None) -> str:
    from runner.store import connect
    from runner.store.uri import check_reachable

    d = record.data
    uri = uri or d["tracking_uri"]
    check_reachable(uri)
    client = connect(uri, in_process=True)
    experiment_id = client.open_experiment(d["experiment"])
    run_id = d.get("synced_run_id") or d["run_id"]
    run = client.find_run(run_id)
    if run is None:  # the store never saw this run: make it
        run_id = client.create_run(experiment_id, d["run_name"], d["tags"])
        record.update(synced_run_id=run_id)
        have_params = {}
    else:
        have_params = run.data.params
    params = [(k, v) for k, v in d["params"].items() if k not in have_params]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    points = record.metric_points()
    have: dict[str, set[int]] = {}
    for key in {k for k, _, _, _ in points}:
        have[key] = {m.step for m in client.get_metric_history(run_id, key)}
    missing = [(k, v, t, s) for k, v, t, s in points if s not in have[k]]
    for i in range(0, len(missing), 1000):
        client.log_batch(run_id, metrics=missing[i : i + 1000])
    ts = max([t for _, _, t, _ in points], default=0)
    tags = [("error", d["error"][:5000])] if d.get("error") else []
    tags.append(("synced_from", str(record.folder.resolve())))
    client.log_batch(run_id, metrics=[(k, float(v), ts, 0) for k, v in d["final_metrics"].items()], tags=tags)
    present = {a.path for a in client.list_artifacts(run_id)}
    for name in d.get("artifacts", []):
        if name not in present and (record.folder / name).exists():
            client.log_artifact(run_id, str(record.folder / name))
    client.set_terminated(run_id, d["status"] if d["status"] != "RUNNING" else "KILLED")
    record.update(synced=True)
    return run_id
