"""`python -m runner reap`: close runs whose process died (SIGKILL, power loss) as KILLED.

A live run beats a heartbeat tag (`runner.heartbeat`, epoch seconds) every 10 seconds; a RUNNING
run whose last beat (or start, if it never beat) is older than --stale-after seconds is marked
KILLED with the reason in its `error` tag. What it logged before it died stays.
"""
from __future__ import annotations

import argparse
import time

from runner.store.stream import HEARTBEAT_TAG  # beaten by every live run and sweep parent


def main(argv: list[str]) -> int:
    from runner.errors import UserError
    from runner.store import connect
    from runner.store.uri import check_reachable, resolve_uri

    parser = argparse.ArgumentParser(prog="python -m runner reap", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="runner", help="MLflow experiment (default: runner)")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here")
    parser.add_argument("--stale-after", type=float, default=60.0, help="seconds without a heartbeat (default 60)")
    parser.add_argument("--dry-run", action="store_true", help="list them, change nothing")
    args = parser.parse_args(argv)
    try:
        uri = resolve_uri(args.tracking_uri)
        check_reachable(uri)
    except UserError as exc:
        print(f"Error: {exc}")
        return 2
    client = connect(uri, in_process=True)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"No experiment '{args.experiment}' in {uri}.")
        return 0
    now = time.time()
    stale = []
    for run in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=50000):
        beat = run.data.tags.get(HEARTBEAT_TAG)
        last = float(beat) if beat else run.info.start_time / 1000
        if now - last > args.stale_after:
            stale.append((run, last))
    for run, last in stale:
        age = now - last
        print(f"{'would close' if args.dry_run else 'closed'} {run.info.run_id} ({run.info.run_name}): no heartbeat for {age:.0f} s")
        if not args.dry_run:
            client.set_tag(run.info.run_id, "error", f"the process stopped: no heartbeat for {age:.0f} s (closed by runner reap)")
            client.set_terminated(run.info.run_id, "KILLED")
    print(f"{len(stale)} stale run(s) of {args.experiment}{' (dry run)' if args.dry_run else ' marked KILLED'}.")
    return 0
