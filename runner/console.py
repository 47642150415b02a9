"""What the user sees while a run goes: a progress bar on a terminal, a few plain lines otherwise."""
from __future__ import annotations

import sys
import time
from typing import Optional


class Progress:
    """`bar`: tqdm on stderr. `lines`: a line at the first update (the run has started), then one
    every LINE_SECONDS (a log file grows by time, whatever the run's length or speed), and one at
    the end, so a short run prints its start and its end."""

    LINE_SECONDS = 5.0

    def __init__(self, total: int, mode: str = "auto", label: str = ""):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.total, self.label = mode, total, label
        self.bar = None
        self.start = time.perf_counter()
        self.next_line = self.start  # the first update prints
        self.last_printed: Optional[int] = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="step", dynamic_ncols=True, leave=False)

    def update(self, done: int, loss: Optional[float]) -> None:
        if self.bar is not None:
            # update() redraws at most every tqdm's mininterval (0.1 s); a refresh() per call
            # redrew the terminal every check_every steps, from the loop's thread.
            if loss is not None:
                self.bar.set_postfix_str(f"loss={loss:.4g}", refresh=False)
            self.bar.update(done - self.bar.n)
        elif self.mode == "lines":
            now = time.perf_counter()
            # a hand-over without new points (the loop's last flush) repeats no step already shown
            if done != self.last_printed and (now >= self.next_line or done == self.total):
                self.next_line = now + self.LINE_SECONDS
                self._line(done, loss, now)

    def end(self, done: int, loss: Optional[float]) -> None:
        """The loop ended at `done` steps (a stopping rule may end it early): its last line."""
        if self.mode == "lines" and self.last_printed != done:
            self._line(done, loss, time.perf_counter())

    def _line(self, done: int, loss: Optional[float], now: float) -> None:
        self.last_printed = done
        shown = f"{loss:.6g}" if loss is not None else "-"
        print(f"[{self.label}] step {done}/{self.total}  loss {shown}  {now - self.start:.1f}s", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summary(*, title: str, status: str, result: dict, seconds: float, compile_seconds: float = 0.0, run_id: Optional[str], uri: str, experiment_id: Optional[str], error: Optional[str]) -> str:
    lines = [f"{title}: {status}" + (f" ({error})" if error else "")]
    lines.append(f"  steps        {result['steps']}   loop {seconds:.3f} s" + (f"   compile {compile_seconds:.2f} s (not in loop)" if compile_seconds else ""))
    lines.append(f"  final loss   {result['final_loss']:.6g}")
    best = result.get("best")
    if best and best["step"] != result["steps"]:  # an earlier point was better: say where (result.json holds it)
        lines.append(f"  best loss    {best['loss']:.6g} at step {best['step']:g} (its solution: \"best\" in result.json)")
    for key, value in result.get("metrics", {}).items():
        lines.append(f"  {key:<12} {value:.6g}" if isinstance(value, float) else f"  {key:<12} {value}")
    for key, value in result.get("solution", {}).items():
        lines.append(f"  {key:<12} {_short(value)}")
    if run_id:
        lines.append(f"  MLflow run   {run_id}  (experiment id {experiment_id}, store {uri})")
        if uri.startswith("sqlite:") or uri.startswith("file:"):
            lines.append(f"  open it      mlflow ui --backend-store-uri {uri}   then http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}")
        elif uri.startswith("http"):
            lines.append(f"  open it      {uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}")
    return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.8g}"
    if isinstance(value, list) and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.8g}" for v in value) + "]"
    text = str(value)
    return text if len(text) < 200 else text[:197] + "..."
