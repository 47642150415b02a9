"""One run's record, owned by one object from creation to status: the MLflow run (params, tags,
the metric stream, final metrics, artifacts, status) and the job folder's files (record.json,
metrics.csv, config.yaml, result.json, figures).

`RunRecord` is a context manager, so every way out of a run closes it the same way: FINISHED,
FAILED (diverged, or an exception: `RunFailed` is raised once it is recorded) or KILLED (Ctrl-C,
SIGTERM: the interrupt goes on once it is recorded). Never RUNNING.
"""
from __future__ import annotations

import json
import math
import sys
import traceback
from typing import Optional

from runner import outcome, registry, signals
from runner.console import Progress, summary
from runner.figures import draw_run_figures
from runner.job_folder import JobFolder
from runner.record_io import StoreLink, config_yaml, flatten, now_ms, write_local
from runner.store.stream import MetricStream


class RunFailed(Exception):
    """The run failed and is already recorded FAILED in MLflow with its reason."""


class RunRecord:
    def __init__(self, client, cfg, experiment, ctx, experiment_id: str, uri: str, name: str):
        self.client, self.cfg, self.experiment, self.ctx = client, cfg, experiment, ctx
        self.experiment_id, self.uri, self.name = experiment_id, uri, name
        self.status, self.error = "FINISHED", None
        self.loop = self.result = None
        self.local_error, self.lost = None, False
        self.history: list[tuple[int, float]] = []

    def __enter__(self) -> "RunRecord":
        exp, out = self.experiment, self.ctx.output_dir
        tags = self.run_tags()
        self.run_id = self._create_run(tags)
        self.params = flatten(exp.resolved)
        if "tracking.uri" in self.params:  # a password in a server's URI is not for the record
            from runner.trust import redact_uri

            self.params["tracking.uri"] = redact_uri(self.params["tracking.uri"])
        self.folder = JobFolder(out, run_id=self.run_id, tracking_uri=self.uri, experiment=self.cfg.tracking.experiment,
                                experiment_id=self.experiment_id, run_name=self.name, tags=tags, params=self.params)
        self.link = self._store_link()
        self.stream = self._open_stream(out / "metrics.csv")
        mode = exp.trainer["progress"]
        if mode == "auto" and self.ctx.multirun:
            mode = "off"  # jobs of a sweep may run side by side: one line each at the end instead
        self.progress = Progress(exp.trainer["steps"], mode, label=f"{exp.plugins['problem']}+{exp.plugins['optim']}")
        self._sigterm = signals.sigterm_raises()
        self._sigterm.__enter__()
        try:
            items = list(self.params.items())
            for i in range(0, len(items), 100):  # sent without waiting: recorded while the loop runs
                self.link.call(self.client.log_batch, self.run_id, params=items[i : i + 100], wait=False)
            write_local(out / "config.yaml", config_yaml(self.cfg), self.folder)
        except BaseException:
            if not self.__exit__(*sys.exc_info()):
                raise
        return self

    def run_tags(self) -> dict[str, str]:
        exp = self.experiment
        tags = {**exp.plugins, **registry.distribution_tags(exp.plugins), "mlflow.source.name": "runner", "output_dir": str(self.ctx.output_dir),
                "config_hash": exp.config_hash, **self.ctx.sweep_tags()}
        if exp.job.replicas > 1:
            tags.update(replicas=str(exp.job.replicas), replica_mode=exp.job.plan.mode, replica_note=exp.job.plan.reason)
        if exp.device_note:
            tags["device_note"] = exp.device_note  # auto chose the CPU on a GPU machine, and why
        return tags

    def _create_run(self, tags: dict) -> str:
        """The MLflow run (a batch of sweep jobs creates its runs together: runner/batched/record.py)."""
        return self.client.create_run(self.experiment_id, self.name, tags)

    def _store_link(self) -> StoreLink:
        """The run's calls to the store (a batch closes its runs together)."""
        return StoreLink(self.client, self.run_id)

    def _open_stream(self, history_file):
        """Where the metric points go: a stream of this run's own (a batch shares one writer)."""
        return MetricStream(self.client, self.run_id, history_file, uri=self.uri)

    def on_points(self, done: int, points, times, costs) -> None:
        """The loop's logged points: the history, the metric stream, the progress display."""
        self.history.extend(points)
        self.stream.put("loss", points, times)
        self._put_costs(points, times, costs)
        self.progress.update(done, points[-1][1] if points else None)

    def finish(self, loop) -> None:
        """The loop ended: its final loss point and bands, result.json; FAILED if it diverged."""
        self.loop = loop
        self.progress.end(loop.steps, loop.final_loss)
        self.progress.close()
        if loop.stop_reason == "diverged":
            self.status, self.error = "FAILED", loop.error
        if math.isfinite(loop.final_loss):
            self.history.append((loop.steps, loop.final_loss))
            self.stream.put("loss", [(loop.steps, loop.final_loss)], [loop.started_at + loop.seconds])
            self._put_costs([(loop.steps, loop.final_loss)], [loop.started_at + loop.seconds], [loop.evaluations])
        for key, points in (loop.bands or {}).items():
            self.stream.put(key, points)
        self.result = outcome.result(self.experiment.problem, self.experiment.job, loop)
        write_local(self.ctx.output_dir / "result.json", json.dumps(self.result, indent=2, allow_nan=True), self.folder)

    def _put_costs(self, points, times, costs) -> None:
        """The evaluations spent by the end of each logged point's step, as histories on the same
        steps: `loss_evals`, `grad_evals` and their sum `evals`, the cost axis of reports
        (runner/loop.py says what counts). The run's latest value of each is its total."""
        if not costs:
            return
        steps = [s for s, _ in points]
        self.stream.put("loss_evals", [(s, float(c[0])) for s, c in zip(steps, costs)], times)
        self.stream.put("grad_evals", [(s, float(c[1])) for s, c in zip(steps, costs)], times)
        self.stream.put("evals", [(s, float(c[0] + c[1])) for s, c in zip(steps, costs)], times)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc is not None:
                self._failed_by(exc)
        finally:
            self._sigterm.__exit__(None, None, None)
            with signals.sigterm_ignored(self.status == "KILLED"):
                self._close()
        if isinstance(exc, Exception):
            raise RunFailed(self.error) from exc
        if exc is None and (self.status == "FAILED" or self.lost):
            raise RunFailed(self.error or "the record could be kept neither in the job folder nor in the tracking store")
        return False  # an interrupt goes on: the entry point exits 130 or 143

    def _failed_by(self, exc: BaseException) -> None:
        self.progress.close()
        if isinstance(exc, KeyboardInterrupt):
            signals.second_interrupt_exits()
            self.status, self.error = "KILLED", signals.describe(exc)
            return
        if not isinstance(exc, Exception):  # SystemExit from a worker's own handler (Ray), GeneratorExit: not a success
            self.status, self.error = "KILLED", f"interrupted ({type(exc).__name__})"
            return
        self.status, self.error = "FAILED", f"{type(exc).__name__}: {exc}"
        where = self.ctx.output_dir / "traceback.txt"
        write_local(where, "".join(traceback.format_exception(exc)), self.folder)
        print(f"Error: the run failed with {self.error}\n(full traceback in {where})", file=sys.stderr)

    def _close(self) -> None:
        """Close the record; if closing itself raises (a plugin's odd return value, a full disk),
        the run is still closed FAILED with that reason, never left RUNNING."""
        self._terminated = False
        try:
            self._send_end()
        except Exception as exc:
            if self._terminated:
                raise
            self.status, self.error = "FAILED", f"closing the run failed: {type(exc).__name__}: {exc}"
            self.link.call(self.client.log_batch, self.run_id, tags=[("error", self.error[:5000])], wait=False)
            self.link.close(self.status)
            try:
                self.folder.update(status=self.status, error=self.error, synced=self.link.failed is None)
            except Exception:
                pass  # the store has the status; the file is what failed
            raise

    def _send_end(self) -> None:
        """Final metrics and tags, artifacts, figures, status: everything the store is sent
        without waiting, then the status, whose answer comes after all of them."""
        self.stream.close()
        if self.stream.error is not None:
            self.link.failed = self.stream.error  # the store is gone: do not wait on it again
        exp, loop = self.experiment, self.loop
        final = outcome.final_metrics(exp.problem, exp.job, loop, self.result, with_targets=self.status != "KILLED")
        end_tags = [("error", self.error[:5000])] if self.error else []
        self.local_error = self.folder.error or self.stream.local_error
        if self.local_error is not None:  # a full disk under the job folder: the store has the record
            end_tags.append(("local_record_error", f"{type(self.local_error).__name__}: {self.local_error}"[:5000]))
        if loop is not None:  # the origin of the loss points' timestamps: reports plot loss against seconds
            end_tags += [("loop_started_at", f"{loop.started_at:.6f}"), ("compiled", exp.job.compile.reason)]
        # Sent without waiting: the helper records them while this process draws the figures.
        self.link.call(self.client.log_batch, self.run_id, metrics=[(k, v, now_ms(), 0) for k, v in final.items()], tags=end_tags, wait=False)
        artifacts, interrupt = [], None
        try:
            artifacts = self._send_artifacts()
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM while the figures are drawn: the status still goes out
            interrupt = exc
            self._interrupted_while_closing(exc)
        self.folder.update(status=self.status, error=self.error, final_metrics=final, artifacts=[p.name for p in artifacts])
        self.link.close(self.status)  # its answer comes after every one sent before; tried even after a failure
        self._terminated = True
        self.folder.update(synced=self.link.failed is None)
        self.lost = self.local_error is not None and self.link.failed is not None  # neither side holds every point
        self._tell_user()
        if interrupt is not None:
            raise interrupt

    def _interrupted_while_closing(self, exc: KeyboardInterrupt) -> None:
        signals.second_interrupt_exits()
        if self.status != "FAILED":  # a failure keeps its own reason
            self.status, self.error = "KILLED", signals.describe(exc)
            self.link.call(self.client.log_batch, self.run_id, tags=[("error", self.error)], wait=False)

    def _send_artifacts(self) -> list:
        out, send = self.ctx.output_dir, self.cfg.tracking.artifacts
        artifacts = [p for p in (out / "result.json", out / "config.yaml") if p.exists()] if send else []
        for path in artifacts:
            self.link.call(self.client.log_artifact, self.run_id, str(path), wait=False)
        if self.result is not None and self.status != "KILLED":
            job = self.experiment.job
            for path in draw_run_figures(self.link, self.experiment.problem, job, self.history, self.name, out, self.ctx.multirun):
                if send:
                    self.link.call(self.client.log_artifact, self.run_id, str(path), wait=False)
                    artifacts.append(path)
        return artifacts

    def _tell_user(self) -> None:
        loop, error, status = self.loop, self.error, self.status
        if loop is not None and self.result is not None and self.ctx.multirun:
            print(f"[job {self.ctx.job_num}] {self.name}: {status}{f' ({error})' if error else ''}  final loss {loop.final_loss:.6g}  {loop.steps} steps  {loop.seconds:.3f} s  run {self.run_id}")
        elif loop is not None and self.result is not None:
            print(summary(title=self.name, status=status, result=self.result, seconds=loop.seconds, compile_seconds=self.experiment.job.compile.seconds,
                          run_id=self.run_id, uri=self.uri, experiment_id=self.experiment_id, error=error))
        elif error:
            print(f"{self.name}: {status} ({error}); MLflow run {self.run_id}", file=sys.stderr)
        out = self.ctx.output_dir
        if self.local_error is not None:
            print(f"Warning: the job folder {out} could not be written ({type(self.local_error).__name__}: {self.local_error}); "
                  + ("the record is in the tracking store only." if self.link.failed is None else
                     "the tracking store failed too: points after that were lost."), file=sys.stderr)
        if self.link.failed is not None:
            from runner.store.store_errors import reason, sync_command

            print(f"Warning: the tracking store {self.uri} stopped answering during the run ({reason(self.link.failed)}). "
                  f"The full record is kept in {out}; upload it with: {sync_command(self.uri, out)}",
                  file=sys.stderr)

    @property
    def final_loss(self) -> float:
        return self.loop.final_loss

