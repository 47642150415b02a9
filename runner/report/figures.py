"""Render, figures: convergence with a band over seeds, and performance / data profiles.

matplotlib's object API (no pyplot), as in runner/figures.py. Each solver keeps one colour in
every figure of a report.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from runner.figures import FAST_PNG, plain_log_labels
from runner.report import profiles

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
_STYLES = ("-", "--", "-.", ":")


def style(solvers: list[str]) -> dict[str, tuple[str, str]]:
    """(colour, line style) for each solver: ten colours, then the next line style."""
    return {s: (_PALETTE[i % 10], _STYLES[(i // 10) % 4]) for i, s in enumerate(sorted(solvers))}


def plain(text: str) -> str:
    """User text (labels, overrides) shown as typed: a `$` would start matplotlib's mathtext, and
    `$\\frac{x$` makes the whole figure fail to draw."""
    return text.replace("$", r"\$")


def _quantiles(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with warnings.catch_warnings():  # columns where every run has dropped out are NaN, as they should be
        warnings.simplefilter("ignore", RuntimeWarning)
        q = np.nanquantile(matrix, [0.1, 0.5, 0.9], axis=0) if matrix.size else np.full((3, matrix.shape[1]), np.nan)
    return q[0], q[1], q[2]


def _carried(xs: np.ndarray, values: np.ndarray, grid: np.ndarray, finished: bool) -> np.ndarray:
    """The last recorded value at or before each grid point; after the run's end the final value
    (a finished run stays where it stopped) or NaN (a failed run drops out)."""
    idx = np.searchsorted(xs, grid, side="right") - 1
    out = np.where(idx >= 0, values[np.clip(idx, 0, None)], np.nan)
    if not finished and len(xs):
        out[grid > xs[-1]] = np.nan
    return out


def _grid(points: np.ndarray, size: int) -> np.ndarray:
    points = np.unique(points)
    if len(points) <= size:
        return points
    return np.unique(np.concatenate([points[:: max(len(points) // size, 1)], points[-1:]]))


AXIS_LABELS = {"steps": "optimiser step", "seconds": "seconds (loop wall time)",
               "evals": "evaluations (loss + gradient)"}
_UNITS = {"steps": "steps", "seconds": "seconds", "evals": "evaluations"}


def _x(run, point, measure: str) -> float:
    """A history point's position on a cost axis: its step, its seconds, or its evaluations."""
    if measure == "steps":
        return point[0]
    if measure == "seconds":
        return point[2]
    return run.evals.get(point[0], np.nan)


def convergence(runs, title: str, path: Path, colours: dict | None = None, measures=("steps", "seconds")) -> None:
    """One panel per cost axis (steps, seconds, evaluations), loss against it: per solver the
    median over its runs and the 10-90 % band (a single replicas run: its own replica band)."""
    from matplotlib.figure import Figure

    colours = colours or style([r.solver_label for r in runs])
    scale = _LossScale(runs)
    fig = Figure(figsize=(5.5 * len(measures), 4.2))
    fig.subplots_adjust(left=0.07 * 2 / len(measures), right=0.985, top=0.86, bottom=0.13, wspace=0.18)
    axes = list(np.atleast_1d(fig.subplots(1, len(measures))))
    positive = True
    starts = []  # the median loss at the first step: a diverging run must not squash the plot
    for solver in sorted({r.solver_label for r in runs}):
        group = [r for r in runs if r.solver_label == solver and r.history]
        if not group:
            continue
        colour, line = colours[solver]
        for k, (ax, measure) in enumerate(zip(axes, measures)):
            grid, lo, mid, hi = _band(group, measure, scale)
            if not grid.size:
                continue  # no run of this solver recorded that cost (evaluations before they were counted)
            n = f" ({len(group)} runs)" if len(group) > 1 else ""
            ax.plot(grid, mid, line, color=colour, lw=1.6, label=plain(f"{solver}{n}"[:60]))
            ax.fill_between(grid, lo, hi, color=colour, alpha=0.18, lw=0)
            finite = mid[np.isfinite(mid)]
            if k == 0 and finite.size:
                starts.append(finite[0])
            positive = positive and (finite.size == 0 or finite.min() > 0)
    for ax, xlabel in zip(axes, (AXIS_LABELS[m] for m in measures)):
        if scale.target is not None:
            ax.axhline(scale(np.array([scale.target]))[0], color="k", ls="--", lw=0.8, label="target")
        if positive:
            ax.set_yscale("log")
            plain_log_labels(ax.yaxis)  # as the runs' own figures: mathtext's layout was most of the drawing
            if starts:
                ax.set_ylim(top=max(starts) * 1e3)
        ax.set_xlabel(xlabel)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("loss − optimum" if scale.optimum is not None else "loss")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{plain(title)}: median over seeds, 10–90 % band", fontsize=11)
    fig.savefig(path, dpi=90, pil_kwargs=FAST_PNG)


class _LossScale:
    """What the convergence plot shows of a loss: the excess above the problem's optimum where
    the problem knows it, with a floor so that an excess of zero still shows."""

    def __init__(self, runs):
        known = any("loss_optimum" in r.metrics for r in runs)
        self.optimum = np.nanmedian([r.metrics.get("loss_optimum", np.nan) for r in runs]) if known else None
        targets = [r.target for r in runs if r.target is not None]
        self.target = float(np.median(targets)) if targets else None
        self.floor = None
        if self.optimum is not None and self.target is not None and self.target > self.optimum:
            self.floor = (self.target - self.optimum) * 1e-15  # an excess of zero (or below: round-off) shows, at the bottom
        self.shift = self.optimum if self.optimum is not None else 0.0

    def __call__(self, v: np.ndarray) -> np.ndarray:
        v = v - self.shift
        return np.maximum(v, self.floor) if self.floor is not None else v


def _band(group, measure: str, scale: _LossScale):
    """(grid, 10 %, median, 90 %) of one solver's runs against steps, seconds or evaluations
    (points without a recorded cost are left out; a run with none drops out of that panel)."""
    series = []
    for r in group:
        xs = np.array([_x(r, p, measure) for p in r.history], float)
        ys = scale(np.array([p[1] for p in r.history], float))
        keep = np.isfinite(xs)
        if keep.any():
            series.append((xs[keep], ys[keep], r.finished))
    if not series:
        empty = np.array([])
        return empty, empty, empty, empty
    xs_all = np.concatenate([xs for xs, _, _ in series])
    grid = _grid(xs_all, 400) if measure != "seconds" else np.linspace(0.0, xs_all.max(), 300)
    matrix = np.array([_carried(xs, ys, grid, finished) for xs, ys, finished in series])
    lo, mid, hi = _quantiles(matrix)
    if len(group) == 1 and group[0].bands and measure == "steps":  # one replicas run: its replicas' band
        b = group[0].bands
        steps = np.array(sorted(b.get("loss_q10", {})), float)
        if len(steps):
            lo = _carried(steps, scale(np.array([b["loss_q10"][s] for s in steps])), grid, True)
            hi = _carried(steps, scale(np.array([b["loss_q90"].get(s, np.nan) for s in steps])), grid, True)
    return grid, lo, mid, hi


def _plain_base2_labels(axis) -> None:
    """τ as plain numbers (1, 2, 4, 8) without minor ticks: mathtext's 2^3 cost most of the drawing."""
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
    axis.set_minor_locator(NullLocator())


def profiles_figure(solvers: list[str], tables: dict[str, np.ndarray], n_problems: int, n_instances: int, path: Path,
                    colours: dict | None = None, measures=("steps", "seconds")) -> None:
    """Performance profiles (top) and data profiles (bottom), one column per cost (evaluations,
    steps or seconds to the target)."""
    from matplotlib.figure import Figure

    colours = colours or style(solvers)
    fig = Figure(figsize=(5.5 * len(measures), 8))
    fig.subplots_adjust(left=0.07 * 2 / len(measures), right=0.985, top=0.91, bottom=0.07, hspace=0.32, wspace=0.18)
    axes = fig.subplots(2, len(measures), squeeze=False)
    for col, measure in enumerate(measures):
        t = tables[measure]
        ratios = profiles.performance_ratios(t)
        finite = ratios[np.isfinite(ratios)]
        top = max(float(finite.max()) if finite.size else 1.0, 1.0) * 2
        taus = np.append(profiles.breakpoints(ratios, 1.0), top)
        rho = profiles.performance_profile(t, taus)
        costs = t[np.isfinite(t)]
        low = float(costs[costs > 0].min()) if (costs > 0).any() else 1.0
        high = float(costs.max()) * 2 if costs.size else 10.0
        budgets = np.concatenate([[low / 2], profiles.breakpoints(t, low), [max(high, low * 4)]])
        d = profiles.data_profile(t, budgets)
        for j, s in enumerate(solvers):
            colour, line = colours[s]
            axes[0, col].step(taus, rho[:, j], line, where="post", color=colour, lw=1.6, label=plain(s[:60]))
            axes[1, col].step(budgets, d[:, j], line, where="post", color=colour, lw=1.6, label=plain(s[:60]))
        unit = _UNITS[measure]
        axes[0, col].set_xscale("log", base=2)
        _plain_base2_labels(axes[0, col].xaxis)
        axes[0, col].set_xlabel(f"τ: within this factor of the best ({unit})")
        axes[0, col].set_title(f"Performance profile, cost = {unit} to target", fontsize=10)
        axes[1, col].set_xscale("log")
        plain_log_labels(axes[1, col].xaxis)
        axes[1, col].set_xlabel(f"budget ({unit})")
        axes[1, col].set_title(f"Data profile, cost = {unit} to target", fontsize=10)
        for ax in axes[:, col]:
            ax.set_ylim(-0.02, 1.02)
            ax.grid(True, which="major", alpha=0.3)
    axes[0, 0].set_ylabel("share of instances solved")
    axes[1, 0].set_ylabel("share of instances solved")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{len(solvers)} solvers on {n_instances} instances ({n_problems} problems × seeds); "
                 "failures count as never solved", fontsize=11)
    fig.savefig(path, dpi=90, pil_kwargs=FAST_PNG)
