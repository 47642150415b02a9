"""Render, a sweep parent's own figures: its job ranking as a table, and every job's loss curve.

matplotlib's object API (no pyplot: no global figure registry), as in runner/figures.py.
"""
from __future__ import annotations

from pathlib import Path

from runner.report.figures import plain
from runner.report.leaderboard import JOB_COLUMNS, cell

TABLE_ROWS = 40  # leaderboard.png shows at most about this many jobs: a thousand rows are no picture
#                 (and take a minute to draw); leaderboard.csv and .md list every job


def job_table(rows: list[dict], path: Path) -> None:
    """leaderboard.png: the job ranking without error and run id, failed jobs shaded; the
    overrides every job shares in the title, each row's other overrides in its cell. A large
    sweep shows the first jobs of each problem's ranking and says how many more there are."""
    from matplotlib.figure import Figure

    from runner.report.leaderboard import split_overrides

    shared, varying = split_overrides(rows)
    note = ""
    if len(rows) > TABLE_ROWS:
        per_problem = max(3, TABLE_ROWS // len({r["problem"] for r in rows}))
        kept, seen = [], {}
        for i, r in enumerate(rows):
            seen[r["problem"]] = seen.get(r["problem"], 0) + 1
            if seen[r["problem"]] <= per_problem:
                kept.append(i)
        shown = set(kept)
        left = [r for i, r in enumerate(rows) if i not in shown]
        failed = sum(1 for r in left if r["status"] != "FINISHED")
        note = (f"The first {per_problem} jobs of each problem's ranking; {len(left)} more"
                + (f" ({failed} of them failed)" if failed else "") + " in leaderboard.csv and leaderboard.md.")
        rows, varying = [rows[i] for i in kept], [varying[i] for i in kept]
    cols = [c for c in JOB_COLUMNS[:-2] if c != "problem" or len({r["problem"] for r in rows}) > 1]
    cells = [[plain(cell(other if c == "overrides" else r[c])[:60]) for c in cols] for r, other in zip(rows, varying)] or [["" for _ in cols]]
    fig = Figure(figsize=(11, 0.9 + 0.3 * (len(cells) + 1) + (0.3 if note else 0)))
    ax = fig.subplots()
    ax.axis("off")
    title = "\n".join(t for t in (plain(("Same in every job: " + " ".join(shared))[:150]) if shared else "", plain(note)) if t)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    table = ax.table(cellText=cells, colLabels=cols, loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(cols))))
    for i, r in enumerate(rows, start=1):
        if r["status"] != "FINISHED":
            for j in range(len(cols)):
                table[i, j].set_facecolor("#f8d7da")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def job_curves(rows: list[dict], curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """loss_curves.png: each job's loss (`curves`: run id -> [(step, loss)]) on one axis, in the
    ranking's order; failed jobs dotted. Log scale when every loss is positive. Up to 20 jobs
    each is its own line with a legend; more are drawn as two line collections (finished,
    failed): the same picture, drawn in a fraction of the time a thousand lines take."""
    from matplotlib import rcParams
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from runner.report.leaderboard import split_overrides

    _, varying = split_overrides(rows)
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    positive = True
    many = len(rows) > 20
    lines: dict[str, list] = {"-": [], ":": []}
    for r, other in zip(rows, varying):
        points = curves.get(r["run_id"])
        if not points:
            continue
        steps, values = zip(*points)
        positive = positive and min(values) > 0
        style = "-" if r["status"] == "FINISHED" else ":"
        if many:
            lines[style].append(points)
        else:
            ax.plot(steps, values, style, lw=1.2, label=plain((other or r["name"])[:50]))
    cycle = [c["color"] for c in rcParams["axes.prop_cycle"]]  # the colours ax.plot would take, in turn
    drawn = 0
    for style, segments in lines.items():
        if segments:
            colours = [cycle[(drawn + i) % len(cycle)] for i in range(len(segments))]
            ax.add_collection(LineCollection(segments, linestyles="solid" if style == "-" else "dotted", lw=1.0, alpha=0.6, colors=colours))
            drawn += len(segments)
    if many:
        ax.autoscale_view()
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss of every job (dotted: failed)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines and len(rows) <= 20:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
