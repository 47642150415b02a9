"""Render, the page: report.html, self-contained (figures embedded), every text escaped."""
from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path

from runner.lre import lre

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}tr.bad td{background:#fdf0f0}.meta,.crit{color:#555;font-size:13px}
img{max-width:100%}figure{margin:0 0 1.5em}.notes{color:#8a5a00}"""

_e = html.escape


def report_html(runs, rows, criteria, truths, figures: list[Path], notes: list[str], source: str,
                costs=("steps", "seconds")) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Optimiser comparison</title><style>{_CSS}</style></head><body>",
             "<h1>Optimiser comparison</h1>",
             f"<p class='meta'>{_e(source)} · {len(runs)} runs · made {time.strftime('%Y-%m-%d %H:%M')} by <code>python -m runner report</code></p>"]
    if notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts += _leaderboard(rows, criteria)
    parts += _figures(figures, costs)
    parts += _truths(truths)
    parts += _failures(runs)
    parts.append("</body></html>")
    return "\n".join(parts)


def _leaderboard(rows, criteria) -> list[str]:
    parts = ["<h2>Leaderboard</h2><p>Per problem, each solver over its seeds: runs that solved the problem "
             "(ended within its target), the median final loss of the finished runs, and the median steps and seconds "
             "to the target over the runs that reached it. Failed and killed runs count as not solved.</p>"]
    for problem in sorted({r["problem"] for r in rows}):
        parts.append(f"<h3>{_e(problem)}</h3><p class='crit'>Solved: {_e(criteria.get(problem, ''))}</p>")
        parts.append("<table><tr><th>solver</th><th>runs</th><th>solved</th><th>success</th><th>failures</th>"
                     "<th>median final loss</th><th>median steps to target</th><th>median seconds to target</th>"
                     "<th>median evaluations to target</th></tr>")
        for row in (r for r in rows if r["problem"] == problem):
            cls = " class='bad'" if row["failures"] else ""
            parts.append(f"<tr{cls}><td>{_e(row['solver'])}</td><td>{row['runs']}</td><td>{row['solved']}</td>"
                         f"<td>{row['success_rate']:.0%}</td><td>{row['failures']}</td><td>{_fmt(row['median_final_loss'])}</td>"
                         f"<td>{_fmt(row['median_steps_to_target'])}</td><td>{_fmt(row['median_seconds_to_target'], 3)}</td>"
                         f"<td>{_fmt(row.get('median_evals_to_target', math.nan))}</td></tr>")
        parts.append("</table>")
    return parts


_AXES = {"steps": "optimiser steps", "seconds": "wall-clock seconds of the loop",
         "evals": "evaluations (loss and gradient evaluations, counted as runner/loop.py says)"}


def _figures(figures: list[Path], costs=("steps", "seconds")) -> list[str]:
    axes = " and against ".join(_AXES[c] for c in costs)
    parts = [f"<h2>Convergence</h2><p>Median over seeds (line) and the 10–90 % band (shaded), against {_e(axes)}. "
             "Where the problem knows its optimum the plot shows the "
             "excess loss above it; the dashed line is the target. A failed run drops out where it failed.</p>"]
    parts += [_img(path) for path in figures if path.name.startswith("convergence")]
    profiles = [p for p in figures if p.name == "profiles.png"]
    if profiles:
        parts.append("<h2>Performance and data profiles</h2><p>Performance profile (Dolan and Moré, 2002): the share of "
                     "instances a solver solved within a factor τ of the best solver's cost. Data profile (Moré and Wild, 2009): "
                     f"the share solved within a budget of {_e(' or '.join(costs))}. An instance is a problem from one seed; a run "
                     "that failed or never reached the target counts as never solving it.</p>")
        parts.append(_img(profiles[0]))
    return parts


def _truths(truths: dict[str, dict]) -> list[str]:
    if not truths:
        return []
    parts = ["<h2>Solutions against the truth</h2><p>Each solver's best run (least final loss) beside the known "
             "truth or certified value; in brackets the digits that agree (LRE, up to 15).</p>"]
    for problem, entry in sorted(truths.items()):
        solvers = list(entry["solvers"])
        parts.append(f"<h3>{_e(problem)}</h3><table><tr><th>value</th><th>truth</th>" + "".join(f"<th>{_e(s)}</th>" for s in solvers) + "</tr>")
        for name, truth in entry["truth"].items():
            cells = "".join(f"<td>{entry['solvers'][s][name]:.15g} ({lre(entry['solvers'][s][name], truth):.1f})</td>" for s in solvers)
            parts.append(f"<tr><td>{_e(name)}</td><td>{truth:.15g}</td>{cells}</tr>")
        parts.append("</table>")
    return parts


def _failures(runs) -> list[str]:
    failed = [r for r in runs if not r.finished]
    if not failed:
        return []
    parts = ["<h2>Failed and killed runs</h2><table><tr><th>run</th><th>status</th><th>reason</th></tr>"]
    parts += [f"<tr><td>{_e(r.name)}</td><td>{_e(r.status)}</td><td>{_e(r.error)}</td></tr>" for r in failed]
    parts.append("</table>")
    return parts


def _fmt(v, digits: int = 4) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<figure><img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'></figure>"
