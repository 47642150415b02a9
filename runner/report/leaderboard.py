"""The leaderboards, defined once for sweeps and reports: what is ranked, by what, and the files.

Two views of the same runs, at two grains:

- `leaderboard(runs)`: per problem and solver, over its seeds: how many solved, success rate,
  median final loss and cost to the target. Ranked by success, then cost, then final loss. The
  report's `leaderboard.csv` (and a sweep parent's `report/leaderboard.csv`).
- `job_ranking(runs)`: a sweep's jobs one by one, within each problem instance (a problem plugin
  with its arguments: losses of different problems are not comparable), finished before failed,
  then by final loss. The sweep parent's own `leaderboard.csv` / `.md` / `.png` and its console
  summary, which show only the overrides that vary between jobs (`split_overrides`).

Both name a best run the same way: the finished run with the least final loss.
"""
from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path
from typing import Any, Optional

from runner.report.collect import RunData

LEADERBOARD_COLUMNS = ("problem", "solver", "runs", "finished", "failures", "solved", "success_rate",
                       "median_final_loss", "median_steps_to_target", "median_seconds_to_target", "median_evals_to_target",
                       "target_loss", "best_run_id")
JOB_COLUMNS = ("problem", "rank", "job", "overrides", "status", "final_loss", "steps", "loop_seconds", "error", "run_id")


def best_run(runs: list[RunData]) -> Optional[RunData]:
    """The finished run with the least final loss (the first of equals); None if none finished."""
    return min((r for r in runs if r.finished), key=lambda r: _nan_last(r.final_loss), default=None)


def leaderboard(runs: list[RunData]) -> list[dict]:
    """One row per (problem label, solver label); analyse.label and analyse.judge ran first."""
    groups: dict[tuple, list[RunData]] = {}
    for r in runs:
        groups.setdefault((r.problem_label, r.solver_label), []).append(r)
    rows = [_leaderboard_row(problem, solver, group) for (problem, solver), group in groups.items()]
    rank = lambda row: (row["problem"], -row["success_rate"], _nan_last(row["median_steps_to_target"]), _nan_last(row["median_final_loss"]))  # noqa: E731
    return sorted(rows, key=rank)


def _leaderboard_row(problem: str, solver: str, group: list[RunData]) -> dict:
    finished = [r for r in group if r.finished]
    solved = [r for r in group if r.solved]
    finals = [r.final_loss for r in finished if not math.isnan(r.final_loss)]  # an inf loss is a median of inf
    targets = [r.target for r in group if r.target is not None]
    best = best_run(group)
    return {
        "problem": problem, "solver": solver, "runs": len(group), "finished": len(finished),
        "failures": len(group) - len(finished), "solved": len(solved),
        "success_rate": len(solved) / len(group),
        "median_final_loss": _median(finals),
        "median_steps_to_target": _median([r.steps_to_target for r in solved]),
        "median_seconds_to_target": _median([r.seconds_to_target for r in solved]),
        "median_evals_to_target": _median([r.evals_to_target for r in solved if not math.isnan(r.evals_to_target)]),
        "target_loss": _median(targets),
        "best_run_id": best.run_id if best else "",
    }


def job_ranking(runs: list[RunData]) -> list[dict]:
    """A sweep's jobs (every child, whatever its status), grouped by problem instance (in the order
    of their first job), best first within each, failures last; `rank` counts within the problem."""
    from runner.report.analyse import label

    label(runs)
    rows = [{
        "problem": r.problem_label,
        "job": int(r.tags.get("sweep_job", -1)),
        "run_id": r.run_id,
        "name": r.name,
        "overrides": r.tags.get("overrides", ""),
        "status": r.status,
        "final_loss": r.final_loss,
        "steps": int(r.metrics["steps"]) if "steps" in r.metrics else None,
        "loop_seconds": r.metrics.get("loop_seconds", math.nan),
        "error": r.error,
    } for r in runs]
    first_job: dict[str, int] = {}
    for r in rows:
        first_job[r["problem"]] = min(first_job.get(r["problem"], r["job"]), r["job"])
    rank = lambda r: (first_job[r["problem"]], r["problem"], r["status"] != "FINISHED", _nan_last(r["final_loss"]), r["job"])  # noqa: E731
    rows.sort(key=rank)
    for i, r in enumerate(rows):
        r["rank"] = 1 if i == 0 or rows[i - 1]["problem"] != r["problem"] else rows[i - 1]["rank"] + 1
    return rows


def best_per_problem(rows: list[dict]) -> dict[str, dict]:
    """Each problem's best job (the first finished one with a finite loss in the ranking)."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["status"] == "FINISHED" and math.isfinite(r["final_loss"]):
            best.setdefault(r["problem"], r)
    return best


def split_overrides(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(the overrides every job shares, each row's other overrides, in the rows' order): what a
    table shows once above it and what it shows per row. An override is `key=value`; one without
    `=` is its own key."""
    parsed = [_override_items(r["overrides"]) for r in rows]
    keys = {k for items in parsed for k in items}
    fixed = {k for k in keys if len(rows) > 1 and len({items.get(k) for items in parsed}) == 1}
    order = list(dict.fromkeys(k for items in parsed for k in items))
    shared = [parsed[0][k] for k in order if k in fixed] if parsed else []
    return shared, [" ".join(items[k] for k in items if k not in fixed) for items in parsed]


def _override_items(overrides: str) -> dict[str, str]:
    return {o.lstrip("+~").partition("=")[0]: o for o in override_list(overrides)}


_OVERRIDE_START = re.compile(r"(\+{1,2}|~)?[A-Za-z_][\w./@:-]*=|~[A-Za-z_][\w./@:-]*$")


def override_list(text: str) -> list[str]:
    """A job's `overrides` tag (its overrides joined by spaces) back into its overrides. A value
    may hold spaces (`problem.equations=["x + y = 3","x - y = 1"]`): a space inside quotes or
    brackets, escaped, or before a word that does not start an override (`key=` or `~key`) is
    part of the value."""
    pieces, word, depth, quote, escaped = [], "", 0, "", False
    for ch in text:
        if escaped:
            word, escaped = word + ch, False
            continue
        if ch == "\\":
            escaped = True
        elif quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth = max(depth - 1, 0)
        elif ch.isspace() and depth == 0:
            pieces.append(word)
            word = ""
            continue
        word += ch
    pieces.append(word)
    out: list[str] = []
    for piece in pieces:
        if out and (not piece or not _OVERRIDE_START.match(piece)):
            out[-1] += " " + piece
        elif piece:
            out.append(piece)
    return [o.rstrip() for o in out]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _nan_last(v: float) -> float:
    return v if math.isfinite(v) else math.inf


# -- files --------------------------------------------------------------------------------------------
def write_leaderboard(rows: list[dict], path: Path) -> None:
    _write_csv(rows, LEADERBOARD_COLUMNS, path)


def write_job_ranking(rows: list[dict], folder: Path) -> None:
    """leaderboard.csv (every column, the full overrides) and leaderboard.md in `folder`: the
    overrides every job shares once above the table, each row's other overrides; the problem
    column when the sweep has several problems; no run id."""
    _write_csv(rows, JOB_COLUMNS, folder / "leaderboard.csv")
    shared, varying = split_overrides(rows)
    shown = [c for c in JOB_COLUMNS[:-1] if c != "problem" or len({r["problem"] for r in rows}) > 1]
    lines = []
    if shared:
        lines += ["Same in every job: " + " ".join(f"`{cell(o)}`" for o in shared), ""]
    lines += ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(cell(other if c == "overrides" else r[c]) for c in shown) + " |" for r, other in zip(rows, varying)]
    (folder / "leaderboard.md").write_text("\n".join(lines) + "\n")


def _write_csv(rows: list[dict], columns: tuple[str, ...], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def cell(value: Any) -> str:
    """A value as a Markdown or figure table shows it: floats to 4 digits, no pipes."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "/")
