"""PNG figures of a run: the loss curve, and whatever figures the problem draws of itself.

Drawn with matplotlib's object API (no pyplot: no global figure registry, safe off the main
thread) and without a layout engine: tight_layout alone cost more than the rest of a short run.
"""
from __future__ import annotations

import logging
import math
import traceback
from pathlib import Path

log = logging.getLogger("runner")


def new_figure(width: float = 6.0, height: float = 4.0):
    """A Figure with one Axes, margins set by hand."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.13, right=0.97, top=0.9, bottom=0.12)
    return fig, fig.add_subplot()


FAST_PNG = {"compress_level": 1}  # a third of zlib's default effort: files a little larger, written 3x faster
_loss_figure = None  # (figure, axes, line), built once per process


def save_loss_curve(points: list[tuple[int, float]], path: Path, title: str) -> None:
    """The loss history as a PNG. The figure is built once per process and redrawn with each run's
    data: building the axes and their ticks was half the cost of drawing it anew."""
    global _loss_figure
    if _loss_figure is None:
        fig, ax = new_figure()
        (line,) = ax.plot([], [], lw=1.5)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        # Fixed places for the axis labels: placing them by the tick labels' extents was a
        # quarter of the drawing time. The loss's tick labels ("1e-05", "200") fit the margin.
        ax.xaxis.set_label_coords(0.5, -0.09)
        ax.yaxis.set_label_coords(-0.11, 0.5)
        ax.grid(True, which="major", alpha=0.3)
        _loss_figure = fig, ax, line
    fig, ax, line = _loss_figure
    steps = [s for s, _ in points]
    values = [v for _, v in points]
    finite = [v for v in values if math.isfinite(v)]
    # Log where the loss spans a decade or more: below that a log axis has no labelled tick.
    scale = "log" if finite and min(finite) > 0 and max(finite) >= 10 * min(finite) else "linear"
    if ax.get_yscale() != scale:
        ax.set_yscale(scale)
        if scale == "log":
            plain_log_labels(ax.yaxis)
    line.set_data(steps, values)
    ax.relim()
    ax.autoscale_view()
    ax.set_title(title[:80], fontsize=10, y=1.0)  # a given height: no search for a free one
    fig.savefig(path, dpi=80, pil_kwargs=FAST_PNG)


def plain_log_labels(axis) -> None:
    """'1e-05' instead of mathtext's 10^-5 on a log axis, and no minor ticks: the same
    information, a third of the drawing time of a small figure (mathtext layout is most of it,
    then the eight unlabelled minor ticks per decade)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")))
    axis.set_minor_formatter(NullFormatter())
    axis.set_minor_locator(NullLocator())


def save_problem_figures(problem, params, folder: Path) -> list[Path]:
    """The problem's optional `figures(params) -> {name: matplotlib Figure}` as NAME.png
    (`problem`: a adapter.ProblemHooks, whose default draws none)."""
    saved = []
    for name, fig in problem.figures(params).items():
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=80, pil_kwargs=FAST_PNG)
        if getattr(fig, "number", None) is not None:  # a Figure made with pyplot: release it there
            import matplotlib.pyplot as plt

            plt.close(fig)
        saved.append(path)
    return saved


def draw_run_figures(link, problem, job, history, name: str, out_dir: Path, in_sweep: bool) -> list[Path]:
    """loss_curve.png and the problem's own figures. A figure that cannot be drawn is a warning
    (and a `figures_error` tag), not a failed run: the optimisation's record is complete without it.
    `link`: the run's record_io.StoreLink."""
    client = link.client
    figures = [out_dir / "loss_curve.png"]
    title = f"{name}: loss" + (f" (median of {job.replicas} replicas)" if job.replicas > 1 else "")
    try:
        if in_sweep:  # the helper draws it while this process draws the problem's figures
            client.draw_loss_curve(history, str(figures[0]), title)
        else:  # a single run: the helper would first have to import matplotlib
            save_loss_curve(history, figures[0], title)
        figures += save_problem_figures(problem, job.final_params[0], out_dir)
    except Exception as exc:
        try:
            (out_dir / "figures_traceback.txt").write_text(traceback.format_exc())
        except OSError:  # the job folder is full: the warning below still says what failed
            pass
        log.warning("A figure of the run could not be drawn (%s: %s); traceback in %s.", type(exc).__name__, exc, out_dir / "figures_traceback.txt")
        link.call(client.set_tag, link.run_id, "figures_error", f"{type(exc).__name__}: {exc}"[:5000])
        figures += [p for p in out_dir.glob("*.png") if p not in figures]  # those drawn before it failed
    link.call(client.wait)  # the helper's loss curve is drawn (a failure to draw it is only logged)
    return [p for p in figures if p.exists()]
