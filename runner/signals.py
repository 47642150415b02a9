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
    """While clean-up after an interrupt runs, a second Ctrl-C leaves at once."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))


def ignore_interrupts() -> None:
    """For the MLflow helper process: SIGINT and SIGTERM are the job's to handle (it closes its
    run through the helper, which must outlive it)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
