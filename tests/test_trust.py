"""Trust boundaries: config is data (nothing under hydra.* instantiates arbitrary code, the
environment does not leak into the record), and record.json is not trusted by `sync` (no file
outside its folder, no store it names without the user's say, no other run completed, no live
run marked KILLED)."""
import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import all_runs, run_cli, store
from test_faults import LONG, start, wait_for_points

HOSTILE_CONFIG = [
    ["+hydra.callbacks.x._target_=builtins.open", "+hydra.callbacks.x.file=victim.txt", "+hydra.callbacks.x.mode=w"],
    ["+evil._target_=builtins.open", "+evil.file=victim.txt", "+evil.mode=w", "+hydra.callbacks.x=${evil}"],
    ["+hydra.job_logging.handlers.h.class=builtins.open", "+hydra.job_logging.handlers.h.file=victim.txt",
     "+hydra.job_logging.handlers.h.mode=w", "hydra.job_logging.root.handlers=[h]"],
    ["hydra.job_logging.handlers.console.stream=ext://os.environ"],
    ["+hydra.job.env_set.LD_PRELOAD=victim.txt"],
]


@pytest.mark.parametrize("overrides", HOSTILE_CONFIG, ids=[o[0] for o in HOSTILE_CONFIG])
@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_hydra_nodes_cannot_instantiate_arbitrary_code(workdir, overrides, mode):
    (workdir / "victim.txt").write_text("precious\n")
    proc = run_cli(workdir, *(["-m", "trainer.seed=0,1"] if mode == "sweep" else []), *overrides, "trainer.steps=3", timeout=120)
    message = proc.stderr + proc.stdout
    assert proc.returncode == 2 and "not allowed" in message and "Traceback" not in message, message
    assert (workdir / "victim.txt").read_text() == "precious\n"
    assert all(r.info.status != "RUNNING" for r in all_runs(workdir))


def test_logging_factories_in_config_files_are_checked_too():
    """'()' cannot be typed as an override; a config file (--config-dir, a searchpath) can hold it."""
    from omegaconf import OmegaConf

    from runner.trust import ConfigNotAllowed, check

    for bad in ({"formatters": {"f": {"()": "builtins.open", "file": "victim.txt"}}},
                {"filters": {"f": {"()": "os.system", "command": "true"}}},
                {"handlers": {"h": {"class": "logging.handlers.os.system"}}}):
        with pytest.raises(ConfigNotAllowed):
            check(OmegaConf.create({"hydra": {"job_logging": bad}}))
    with pytest.raises(ConfigNotAllowed):  # a module attribute that is no class of ours
        check(OmegaConf.create({"hydra": {"callbacks": {"x": {"_target_": "runner.sweep.os.system"}}}}))
    check(OmegaConf.create({"hydra": {"callbacks": {"x": {"_target_": "runner.sweep.SweepCallback"}}}}))
    check(OmegaConf.create({"hydra": {"job_logging": {"formatters": {"c": {"()": "colorlog.ColoredFormatter"}},
                                                      "handlers": {"h": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}}}}}))


@pytest.mark.slow
def test_the_runners_own_callbacks_still_work(workdir):
    proc = run_cli(workdir, "-m", "trainer.seed=0,1", "trainer.steps=3",
                   "+hydra.callbacks.log._target_=hydra.experimental.callbacks.LogJobReturnCallback")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(all_runs(workdir)) == 3  # the parent (the runner's own callback) and two children


@pytest.mark.parametrize("override", ["tracking.run_name=x-${oc.env:SECRET_TOKEN}", "problem.noise=${oc.env:SECRET_TOKEN}",
                                      "+hydra.x=${oc.env:SECRET_TOKEN}"])
def test_environment_does_not_leak_into_the_store(workdir, override):
    proc = run_cli(workdir, override, "trainer.steps=3", env={"SECRET_TOKEN": "hunter2"})
    if override.startswith("+hydra"):  # hydra's own node is not recorded: allowed
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        assert proc.returncode == 2 and "SECRET_TOKEN" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "hunter2" not in (workdir / "mlflow.db").read_bytes().decode("latin-1") if (workdir / "mlflow.db").exists() else True
    for path in workdir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".csv"):
            assert "hunter2" not in path.read_text(errors="replace"), path


def test_password_in_tracking_uri_is_not_a_param():
    from runner.trust import redact_uri

    assert redact_uri("http://alice:s3cret@host:5000/x") == "http://alice:***@host:5000/x"
    assert redact_uri("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def hostile_record(folder: Path, **data) -> Path:
    folder.mkdir(parents=True)
    record = {"run_id": "0" * 32, "tracking_uri": "http://203.0.113.7:5000", "experiment": "runner", "run_name": "hostile",
              "tags": {}, "params": {"a": "1"}, "status": "FINISHED", "synced": False, "final_metrics": {"final_loss": 1.0},
              "artifacts": [], **data}
    (folder / "record.json").write_text(json.dumps(record))
    (folder / "metrics.csv").write_text("loss,0,1.0,1000\n")
    return folder


def test_sync_does_not_trust_record_json(workdir):
    assert run_cli(workdir, "trainer.steps=5").returncode == 0  # a real run someone else made
    (victim,) = all_runs(workdir)
    (workdir / "secret.txt").write_text("secret\n")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    escape = hostile_record(workdir / "h" / "escape", artifacts=["../../secret.txt"], run_id=victim.info.run_id, status="KILLED")
    absolute = hostile_record(workdir / "h" / "absolute", artifacts=[str(workdir / "secret.txt")])
    linked = hostile_record(workdir / "h" / "linked", artifacts=["result.json"])
    os.symlink(workdir / "secret.txt", linked / "result.json")
    history = hostile_record(workdir / "h" / "history")
    (history / "metrics.csv").unlink()
    os.symlink(workdir / "secret.txt", history / "metrics.csv")
    fifo = workdir / "h" / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "record.json")

    named = run_cli(workdir, "sync", str(workdir / "h"), timeout=120)  # the record's own store: shown, never used
    assert named.returncode == 1 and "203.0.113.7" in named.stderr and "--tracking-uri" in named.stderr, named.stderr
    proc = run_cli(workdir, "sync", "--tracking-uri", uri, str(workdir / "h"), timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for name in ("escape", "absolute", "linked", "history"):
        assert f"h/{name}" in proc.stderr, proc.stderr  # each refused, by name
    assert "FIFO" in proc.stderr
    client = store(workdir)
    (victim,) = [r for r in all_runs(workdir) if r.info.run_id == victim.info.run_id]
    assert victim.info.status == "FINISHED"  # not completed from a record made for another folder
    for run in all_runs(workdir):
        assert "secret.txt" not in {a.path for a in client.list_artifacts(run.info.run_id)}
        assert run.info.status != "RUNNING"

    good = hostile_record(workdir / "good", artifacts=["result.json"])
    (good / "result.json").write_text("{}")
    ok = run_cli(workdir, "sync", "--tracking-uri", uri, str(good))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (run,) = [r for r in all_runs(workdir) if r.info.run_name == "hostile"]
    assert run.info.status == "FINISHED" and [a.path for a in client.list_artifacts(run.info.run_id)] == ["result.json"]


@pytest.mark.slow
def test_sync_leaves_a_live_run_alone(workdir):
    proc = start(workdir, *LONG)
    try:
        (running,) = wait_for_points(workdir, proc=proc)
        folder = Path(running.data.tags["output_dir"])
        synced = run_cli(workdir, "sync", str(folder), "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}")
        assert synced.returncode == 1 and "still alive" in synced.stderr, synced.stdout + synced.stderr
        (run,) = all_runs(workdir)
        assert run.info.status == "RUNNING"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130
    (run,) = all_runs(workdir)
    assert run.info.status == "KILLED"
