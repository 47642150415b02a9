"""What a signal means, in one place: SIGTERM is raised as `Terminated`, a KeyboardInterrupt, so
that a scheduler's stop closes runs and sweeps exactly as Ctrl-C does; after the first interrupt a
second one leaves at once."""
from __future__ import annotations

import contextlib
import os
import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so the same clean-up runs."""


def exit_code(exc: KeyboardInterrupt) -> int:
    return 143 if isinstance(exc, Terminated) else 130


def describe(exc: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"


def _raise_terminated(signum, frame):
    raise Terminated()


def install() -> None:
    """For the process: SIGTERM raises Terminated (the entry point calls it once)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def sigterm_raises():
    """For a block (a run in a worker whose launcher set its own handler): SIGTERM raises
    Terminated inside it, and the previous handler comes back after. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def second_interrupt_exits() -> None:
    """While clean-up after an interrupt runs, a second Ctrl-C (or SIGTERM) leaves at once; the
    MLflow helper, which outlives the process, closes what it left open KILLED."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))


def install_for_sweep(sweep_open, stop_workers) -> None:
    """For a sweep's launching process: on Ctrl-C or SIGTERM while a sweep is open, first stop its
    parallel workers (bounded; see sweep_stop.stop_workers), while the launcher library still waits on
    them, then raise as usual. A second signal meanwhile leaves at once."""

    def on_signal(signum, frame):
        if sweep_open():
            signal.signal(signal.SIGINT, lambda *_: os._exit(130))
            signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
            stop_workers()
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def ignore_interrupts() -> None:
    """For the MLflow helper process: SIGINT and SIGTERM are the job's to handle (it closes its
    run through the helper, which must outlive it)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def sigterm_ignored(when: bool = True):
    """While an interrupted run's short clean-up records it KILLED, a second SIGTERM (a scheduler
    that signals every process, a launcher stopping its workers) must not cut it. Main thread only."""
    if not when or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
