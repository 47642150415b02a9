"""PNG figures of a run: the loss curve, and whatever figures the problem draws of itself."""
from __future__ import annotations

from pathlib import Path


def save_loss_curve(points: list[tuple[int, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [s for s, _ in points]
    values = [v for _, v in points]
    if values and min(values) > 0:
        ax.set_yscale("log")
    ax.plot(steps, values, lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_problem_figures(problem, params, folder: Path) -> list[Path]:
    """Calls the optional `figures(params) -> {name: matplotlib Figure}` of a problem plugin."""
    if not hasattr(problem, "figures"):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = []
    for name, fig in problem.figures(params).items():
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        saved.append(path)
    return saved
