"""The bulk store calls a batched sweep makes (runner/store/sql_bulk.py) record what MLflow's own
calls record, and a batched job closed in bulk keeps its artifacts like a job alone."""
import json
import math
from pathlib import Path

import pytest
from conftest import all_runs, run_cli, store


@pytest.mark.slow
def test_bulk_reads_and_writes_equal_mlflows_own(tmp_path):
    from mlflow.entities import Metric

    from runner.store.local import LocalClient

    client = LocalClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client._sql_bulk() is not None  # the bulk path is the one compared below, not MLflow's run by run
    experiment = client.open_experiment("bulk")
    parent = client.create_run(experiment, "parent", {"sweep": "true"})
    bulk = client.create_runs(experiment, [(f"job{i}", {"mlflow.parentRunId": parent, "k": str(i)}, [("optim.lr", str(i)), ("a.b", "x")])
                                           for i in range(3)])
    alone = [client.create_run(experiment, f"job{i}", {"mlflow.parentRunId": "elsewhere", "k": str(i)}) for i in range(3)]
    for run_id in alone:
        client.log_batch(run_id, params=[("optim.lr", "0"), ("a.b", "x")])
    # Three writes, the last with older steps and a point already newer: latest values as MLflow keeps them.
    writes = [[("loss", float(s), 1000 + s, s) for s in range(3)] + [("evals", 2.0 * s, 1000 + s, s) for s in range(3)],
              [("loss", math.nan, 2000, 3), ("final_loss", 0.5, 3000, 0)],
              [("loss", 7.0, 1500, 2), ("evals", 9.0, 5000, 2)]]
    for points in writes:
        client.log_batches([(run_id, points, [], [("error", "e"), ("k", "new")]) for run_id in bulk])
        for run_id in alone:
            client.mlflow.log_batch(run_id, metrics=[Metric(*p) for p in points])
            client.mlflow.set_tag(run_id, "k", "new")
    for a, b in zip(bulk, alone):
        mine, theirs = client.get_run(a).data, client.get_run(b).data
        assert str(mine.metrics) == str(theirs.metrics) and mine.tags["k"] == "new"
    # runs_of_parent and metric_histories: what search_runs and get_metric_history give.
    client.set_terminated_runs([(run_id, "FINISHED") for run_id in bulk])
    found = client.runs_of_parent(experiment, parent)
    searched = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'", order_by=["attributes.start_time ASC"])
    view = lambda r: (r.info.run_id, r.info.run_name, r.info.status, r.info.start_time, r.info.end_time, r.info.artifact_uri,  # noqa: E731
                      sorted(r.data.tags.items()), sorted(r.data.params.items()), str(sorted(r.data.metrics.items())))
    assert sorted(map(view, found)) == sorted(map(view, searched)) and len(found) == 3
    histories = client.metric_histories(bulk, ["loss", "evals"])
    for run_id in bulk:
        for key in ("loss", "evals"):
            assert str(sorted(histories[run_id][key])) == str(sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)))
    # log_artifacts_bulk: the files where log_artifact puts them.
    (tmp_path / "result.json").write_text('{"a": 1}')
    client.log_artifacts_bulk([(run_id, [str(tmp_path / "result.json")]) for run_id in bulk])
    client.log_artifact(alone[0], str(tmp_path / "result.json"))
    for run_id in (*bulk, alone[0]):
        assert [a.path for a in client.list_artifacts(run_id)] == ["result.json"]
        assert json.loads(Path(client.download_artifacts(run_id, "result.json", str(tmp_path / run_id))).read_text()) == {"a": 1}


@pytest.mark.slow
def test_a_batch_closed_in_bulk_keeps_each_jobs_artifacts(workdir):
    """hydra.launcher.figures=false: the path of a large batch (no figures, artifacts in one request)."""
    proc = run_cli(workdir, "-m", "hydra/launcher=batched", "hydra.launcher.figures=false", "optim.lr=0.01,0.02", "trainer.seed=0,1",
                   "trainer.steps=20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [r for r in all_runs(workdir) if "batch" in r.data.tags]
    assert len(runs) == 4
    client = store(workdir)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["config.yaml", "result.json"]
        folder = Path(run.data.tags["output_dir"])
        for name in ("config.yaml", "result.json"):
            assert Path(client.download_artifacts(run.info.run_id, name, str(workdir / run.info.run_id))).read_text() == (folder / name).read_text()
        record = json.loads((folder / "record.json").read_text())
        assert record["status"] == "FINISHED" and record["synced"] is True and record["artifacts"] == ["result.json", "config.yaml"]
