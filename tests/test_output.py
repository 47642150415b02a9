"""Output that reads well: sweep leaderboards per problem, short parent names, the report's
console table, progress lines by time, benchmarks that never overwrite the committed table."""
from __future__ import annotations

import csv
import math
import warnings

import pytest

from conftest import all_runs, run_cli, store
from runner.naming import NAME_LIMIT, sweep_name


def split(runs):
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(parents) == 1
    return parents[0], [r for r in runs if r is not parents[0]]


@pytest.mark.slow
def test_sweep_over_datasets_ranks_within_each_problem(workdir):
    # Norris' SSE is 26.6 and Longley's 836424 at their optimum: ranking them against each other
    # says nothing. Each dataset is a problem instance with its own ranking.
    proc = run_cli(workdir, "-m", "problem=nist", "problem.dataset=Norris,Longley", "optim=lstsq", "trainer.steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = split(all_runs(workdir))
    assert len(children) == 2 and len(parent.info.run_name) <= NAME_LIMIT
    assert "dataset" in parent.info.run_name
    board = store(workdir).download_artifacts(parent.info.run_id, "leaderboard.csv", str(workdir))
    rows = list(csv.DictReader(open(board)))
    assert sorted((r["problem"], r["rank"]) for r in rows) == [("nist dataset=Longley", "1"), ("nist dataset=Norris", "1")]
    # No single best job across problems: one per problem.
    assert "best_run_id" not in parent.data.tags
    best = parent.data.tags["best_by_problem"]
    assert all(c.info.run_id in best for c in children)
    # Fixed overrides once above the table, each row only what varies.
    out = proc.stdout[proc.stdout.index("same in every job"):]
    assert out.count("problem=nist") == 1 and out.count("trainer.steps=2") == 1, out
    assert out.startswith("same in every job: problem=nist optim=lstsq trainer.steps=2")
    assert "problem nist dataset=Norris" in out and "problem nist dataset=Longley" in out
    md = store(workdir).download_artifacts(parent.info.run_id, "leaderboard.md", str(workdir))
    text = open(md).read()
    assert text.count("trainer.steps=2") == 1 and "| problem.dataset=Norris |" in text
    page = store(workdir).download_artifacts(parent.info.run_id, "report/report.html", str(workdir))
    assert "Same in every run: problem=nist optim=lstsq trainer.steps=2" in open(page).read()


README_NIST = ["problem=nist", "problem.dataset=Norris,Pontius,NoInt1,NoInt2,Filip,Longley,Wampler1,Wampler2,Wampler3,Wampler4,Wampler5",
               "optim=lstsq,lbfgs", "trainer.steps=100", "tracking.experiment=nist-accuracy"]


@pytest.mark.parametrize("overrides, expected", [
    (["problem=poly,puzzle", "optim=adam,sgd,lbfgs"], "sweep-problem=poly,puzzle-optim=adam,sgd,lbfgs"),
    (README_NIST, "sweep-dataset×11-optim×2-problem=nist-trainer.steps=100"),
    (["optim=adam,nadam", "trainer.seed=range(5)"], "sweep-optim=adam,nadam-trainer.seed=range(5)"),
    (["hydra/launcher=joblib", "optim=adam,sgd"], "sweep-optim=adam,sgd"),
])
def test_parent_names_are_short_and_say_what_varies(overrides, expected):
    assert sweep_name(overrides) == expected


@pytest.mark.parametrize("overrides", [
    ["optim.lr=" + ",".join(str(10.0 ** -k) for k in range(40))],
    ["problem=curve", "problem.model='" + "x*" * 500 + "b'", "optim=adam,sgd"],
    ["a" * 300 + "=1,2", "b=\x1b[31mred\n"],
])
def test_parent_names_stay_short_and_printable_with_hostile_values(overrides):
    name = sweep_name(overrides)
    assert len(name) <= NAME_LIMIT and name.isprintable() and name.startswith("sweep-")


def _store_with_runs(workdir, runs):
    """Runs as the runner records them (tags, params, final metrics, a loss history), written
    straight into workdir/mlflow.db: what `report` reads, with values no quick run produces."""
    client = store(workdir)
    experiment_id = client.create_experiment("runner")
    for i, (problem_params, optim_params, final_loss) in enumerate(runs):
        run = client.create_run(experiment_id, run_name=f"run{i}", tags={"problem": "poly", "optim": "adam"})
        rid = run.info.run_id
        params = {"trainer.seed": "0", "trainer.steps": "10", **problem_params, **optim_params}
        for key, value in params.items():
            client.log_param(rid, key, value)
        for step, loss in ((0, 10.0), (10, final_loss)):
            client.log_metric(rid, "loss", loss, step=step)
        client.log_metric(rid, "final_loss", final_loss)
        client.set_terminated(rid, "FINISHED")


@pytest.mark.slow
def test_report_console_never_shows_identical_rows_and_prints_inf(workdir):
    long_dir = "/data/" + "measurements-of-the-same-experiment/" * 3
    _store_with_runs(workdir, [
        ({"problem.data": long_dir + "a.csv"}, {"optim.lr": "0.01"}, 1.5),
        ({"problem.data": long_dir + "b.csv"}, {"optim.lr": "0.01"}, math.inf),
        ({"problem.data": long_dir + "a.csv"}, {"optim.lr": "0.0100000001"}, 2.5),
        ({"problem.data": long_dir + "a.csv"}, {"optim.lr": "0.0100000002"}, math.nan),
    ])
    with warnings.catch_warnings(record=True) as caught:  # in-process, a warning is not in proc.stderr
        warnings.simplefilter("always")
        proc = run_cli(workdir, "report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the inf loss is left out of the curves' axes, not an overflow warning from matplotlib
    assert "RuntimeWarning" not in proc.stderr, proc.stderr
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    rows = [line for line in proc.stdout.splitlines() if "median final loss" in line]
    assert len(rows) == 4 and len(set(rows)) == 4, proc.stdout
    labels = [line.split("solved")[0] for line in rows]
    assert len(set(labels)) == 4, proc.stdout
    inf_row = next(line for line in rows if "b.csv" in line)
    assert inf_row.endswith("median final loss inf"), proc.stdout
    assert sum(line.endswith("median final loss nan") for line in rows) == 1, proc.stdout


@pytest.mark.slow
def test_progress_lines_come_by_time_with_the_start_and_the_end(workdir):
    # A run of a second or two: its first step and its end, not ten lines by fraction of steps.
    proc = run_cli(workdir, "trainer.progress=lines")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[poly+adam] step")]
    assert 2 <= len(lines) <= 3, proc.stdout
    assert lines[0].startswith("[poly+adam] step 10/1000") and lines[-1].startswith("[poly+adam] step 1000/1000"), lines


def test_progress_lines_every_few_seconds_whatever_the_steps(monkeypatch, capsys):
    from runner import console

    clock = [100.0]
    monkeypatch.setattr(console.time, "perf_counter", lambda: clock[0])
    progress = console.Progress(1_000_000, "lines", label="p")
    for done in range(10, 1_000_001, 10):  # 100 000 updates over 50 s of (fake) time
        clock[0] += 0.0005
        progress.update(done, 1.0)
    progress.end(1_000_000, 1.0)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[p] step 10/1000000") and lines[-1].startswith("[p] step 1000000/1000000")
    assert 10 <= len(lines) <= 12, lines  # 50 s: one at the start, one every 5 s, the end
    # A stopping rule ends the loop early: its last line still says where.
    progress = console.Progress(1000, "lines", label="p")
    progress.update(10, 2.0)
    progress.end(370, 0.5)
    assert capsys.readouterr().out.splitlines()[-1].startswith("[p] step 370/1000  loss 0.5")



def test_progress_lines_print_each_step_once(capsys):
    # The loop hands over its last points, then once more with none (a flush): one line for the end.
    from runner import console

    progress = console.Progress(1000, "lines", label="p")
    progress.update(10, 2.0)
    progress.update(1000, 1.0)
    progress.update(1000, None)
    progress.end(1000, 1.0)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["[p] step 10/1000", "[p] step 1000/1000"], lines
    assert "loss -" not in "".join(lines), lines

def test_partial_benchmarks_never_overwrite_the_committed_table(tmp_path, monkeypatch, capsys):
    import sys
    import types

    import benchmarks.__main__ as bench
    from benchmarks.common import Row

    section = types.ModuleType("benchmarks.tiny")
    section.run = lambda quick=False: [Row("tiny", "a figure", "ratio", 1.0 if quick else 2.0)]
    monkeypatch.setitem(sys.modules, "benchmarks.tiny", section)
    monkeypatch.setattr(bench, "SECTIONS", [*bench.SECTIONS, "tiny"])
    monkeypatch.setattr(bench, "REPO", tmp_path)
    committed = tmp_path / "BENCHMARKS.md"
    committed.write_text("the full run's table\n")

    assert bench.main(["--quick", "--only", "tiny"]) == 0
    assert committed.read_text() == "the full run's table\n"
    partial = tmp_path / "benchmarks" / "out" / "BENCHMARKS.md"
    assert "Command: `python -m benchmarks --quick --only tiny`" in partial.read_text()
    assert str(partial) in capsys.readouterr().out  # says where it went
    # Asking for it explicitly is refused, not obeyed.
    assert bench.main(["--only", "tiny", "--out", str(committed)]) == 2
    assert committed.read_text() == "the full run's table\n"
    assert "BENCHMARKS.md holds the full run's table" in capsys.readouterr().err
    # A full run (every section, full sizes) is what updates it.
    monkeypatch.setattr(bench, "SECTIONS", ["tiny"])
    assert bench.main([]) == 0
    assert "Command: `python -m benchmarks` (" in committed.read_text() and "| tiny | a figure | ratio | 2 × |" in committed.read_text()
