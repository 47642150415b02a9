"""`python -m runner ARGS` inside the test process: the real entry point (runner.__main__.main),
without paying for a new interpreter, torch's import and a fresh MLflow helper per call (about
2 s each; most tests make several calls).

Each call sees what a new process would: it runs in `cwd` with the given environment, its stdout
and stderr are captured at the file-descriptor level (C-level writes and the MLflow helper's
output included), SystemExit becomes the return code, and everything the runner, Hydra and
logging change in the process is put back afterwards (working directory, environment, sys.argv,
signal handlers, logging handlers and levels, warning filters, OmegaConf resolvers, Hydra's global
state and config store, the runner's per-process state). The helpers a call used are closed as at
the end of a real process (runner/store/helper.py `_close_all`), so the record is complete when
the call returns.

What this cannot reproduce is the process itself: signals, the interpreter's own exit, imports
and the plugins found at start-up (PYTHONPATH and friends), launchers that start workers. Those
calls go to a real process: see `needs_process`.
"""
from __future__ import annotations

import atexit
import faulthandler
import io
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Environment variables that change what a new interpreter imports or finds, or how torch starts:
# a call that sets one runs in a real process.
_PROCESS_ENV = re.compile(r"^(PYTHON|LD_|DYLD_|CUDA_|TORCH|PYTORCH|OMP_|MKL_|HOME$|PATH$)")
# Launchers that start worker processes (the basic and batched launchers run jobs in the calling process).
_PROCESS_LAUNCHERS = re.compile(r"^\+?hydra/launcher=(?!(basic|batched)$)")


def needs_process(args, env) -> bool:
    return any(_PROCESS_ENV.search(k) for k in (env or {})) or any(_PROCESS_LAUNCHERS.search(a) for a in args)


# -- the MLflow helper, one per test worker ---------------------------------------------------------
def _helper_class():
    from runner.store.helper import HelperClient

    class WarmHelper(HelperClient):
        """runner.store.helper.HelperClient served by tests/warm_helper.py: one process for all the
        in-process calls of a test worker. A call hands it to the runner as the prestarted helper;
        `bind` places it where the call runs; `end` does what a real helper does when its job's
        process ends, and keeps it for the next call."""

        def __init__(self):
            from multiprocessing.connection import Connection
            import socket

            self.owner = os.getpid()
            here, there = socket.socketpair()
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
            self._process = subprocess.Popen(
                # "runner.store.helper" in its command line: runner.sweep_stop tells helpers from workers by it
                [sys.executable, str(REPO / "tests" / "warm_helper.py"), str(there.fileno()), "runner.store.helper"],
                pass_fds=(there.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=env, start_new_session=True,
            )
            there.close()
            self._conn = Connection(here.detach())
            self._lock = threading.Lock()
            self._unanswered = []
            self._failure = None
            self.call = None  # (launch directory, stdout file, stderr file) of the call using it
            self.placed = False

        def bind(self, uri: str) -> None:
            super().bind(uri)
            cwd, out, err = self.call
            self._call("_place", cwd, dict(os.environ), out, err)
            self.placed = True

        def end(self) -> bool:
            """The call is over: close what it left open, as at a process's end. False: unusable."""
            try:
                if self.placed:
                    self._call("_close_abandoned")
                    self._call("_place", tempfile.gettempdir(), dict(os.environ), os.devnull, os.devnull)
                self.placed = False
                return self._process.poll() is None
            except Exception:
                return False

        def discard(self) -> None:
            try:
                self.close(timeout=10)
            except Exception:
                self._process.kill()

    return WarmHelper


_warm = None  # this worker's helper


def _the_helper():
    global _warm
    if _warm is None or _warm._process.poll() is not None:
        _warm = _helper_class()()
    return _warm


@atexit.register
def _discard_helper() -> None:
    if _warm is not None:
        _warm.discard()


# -- what a call changes in the process, put back afterwards ---------------------------------------
class _ProcessState:
    def __init__(self):
        from hydra.core.config_store import ConfigStore
        from omegaconf.basecontainer import BaseContainer

        self.cwd = os.getcwd()
        self.environ = dict(os.environ)
        self.argv = list(sys.argv)
        self.path = list(sys.path)
        self.signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)}
        self.warnings = list(warnings.filters)
        self.resolvers = dict(BaseContainer._resolvers)
        self.config_store = _shallow(ConfigStore.instance().repo)
        from hydra.plugins.sweeper import Sweeper

        self.validate_batch = Sweeper.validate_batch_is_legal  # the batched launcher replaces it for its process
        self.loggers = {name: (list(lg.handlers), lg.level, lg.propagate, lg.disabled)
                        for name, lg in [("", logging.getLogger()), *logging.Logger.manager.loggerDict.items()]
                        if isinstance(lg, logging.Logger)}
        self.logging_disable = logging.root.manager.disable
        self.raise_exceptions = logging.raiseExceptions
        import torch

        self.dtype = torch.get_default_dtype()

    def restore(self) -> None:
        from hydra.core.config_store import ConfigStore
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig
        from omegaconf.basecontainer import BaseContainer

        os.chdir(self.cwd)
        os.environ.clear()
        os.environ.update(self.environ)
        sys.argv[:] = self.argv
        sys.path[:] = self.path
        for sig, handler in self.signals.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        warnings.filters[:] = self.warnings
        warnings._filters_mutated()
        BaseContainer._resolvers.clear()
        BaseContainer._resolvers.update(self.resolvers)
        ConfigStore.instance().repo = self.config_store
        from hydra.plugins.sweeper import Sweeper

        Sweeper.validate_batch_is_legal = self.validate_batch
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        self._restore_logging()
        import torch

        torch.set_default_dtype(self.dtype)
        if "torch._dynamo" in sys.modules:  # compiled frames and recompile counts are per process
            torch._dynamo.reset()
        _reset_runner_state()

    def _restore_logging(self) -> None:
        current = [("", logging.getLogger()), *logging.Logger.manager.loggerDict.items()]
        keep = {id(h) for handlers, *_ in self.loggers.values() for h in handlers}
        for name, lg in current:
            if not isinstance(lg, logging.Logger):
                continue
            for handler in lg.handlers:
                if id(handler) not in keep:  # Hydra's console and job-log handlers: closed, as at exit
                    try:
                        handler.close()
                    except Exception:
                        pass
            handlers, level, propagate, disabled = self.loggers.get(name, ([], logging.NOTSET, True, False))
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled
        logging.disable(self.logging_disable)
        logging.raiseExceptions = self.raise_exceptions


def _shallow(tree):
    """The config store's group tree, its nodes shared: what a call adds or replaces is dropped."""
    return {k: _shallow(v) if isinstance(v, dict) else v for k, v in tree.items()}


def _reset_runner_state() -> None:
    """Per-process state of the runner's modules, as a new process starts with."""
    from runner import sweep, sweep_stop
    from runner.store import helper, local

    sweep._Sweeps.open = None
    sweep._Sweeps.outcome = None
    sweep_stop._stopping = False
    local._clients.clear()
    import store_template

    store_template.forget_engines()
    helper._helpers.clear()
    helper._spare = None


def _close_helpers(warm) -> None:
    """What runner.store.helper's atexit hook does at the end of a process: every helper the call
    used leaves once its requests are answered (closing any run left open, as for a process that
    died). The worker's own helper does the same and stays."""
    global _warm
    from runner.store import helper

    for client in {id(c): c for c in [*helper._helpers.values(), helper._spare]}.values():
        if client is None or client is warm:
            continue
        try:
            client.close(timeout=30)
        except Exception:
            pass
    if not warm.end():
        warm.discard()
        _warm = None


# -- the call ---------------------------------------------------------------------------------------
_warmed_up = False


def _warm_up() -> None:
    """Once per test process: what a new interpreter has before the runner composes anything
    (Hydra's plugins discovered and their configs stored), so that each call's config store
    is put back to the same state."""
    global _warmed_up
    if not _warmed_up:
        from hydra.core.plugins import Plugins

        Plugins.instance()
        import runner.__main__  # noqa: F401
        import store_template

        store_template.install()
        _the_helper()
        import torch  # noqa: F401

        _warmed_up = True


def run_in_process(cwd: Path, args: tuple[str, ...], env: dict | None, timeout: float) -> subprocess.CompletedProcess:
    _warm_up()
    from runner import __main__ as entry
    from runner.store import helper

    state = _ProcessState()
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryDirectory(prefix="runner-call-") as scratch:
        paths = [os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")]
        files = [os.open(p, os.O_RDWR | os.O_CREAT | os.O_APPEND) for p in paths]
        saved_fds = [os.dup(1), os.dup(2)]
        saved_streams = sys.stdout, sys.stderr
        warm = _the_helper()
        code = 0
        try:
            os.environ.update({"PYTHONUNBUFFERED": "1", **(env or {})})
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            os.chdir(cwd)
            os.dup2(files[0], 1)
            os.dup2(files[1], 2)
            sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True)
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True)
            warm.call = (os.getcwd(), *paths)
            helper._spare = warm  # prestarted, as runner.store.helper.prestart() would
            faulthandler.dump_traceback_later(timeout, exit=True, file=saved_fds[1])  # a hung call: its stacks, then the worker ends
            try:
                code = _call(entry.main, list(args))
            finally:
                faulthandler.cancel_dump_traceback_later()
                sys.stdout.flush()
                sys.stderr.flush()
                _close_helpers(warm)
        finally:
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in (*saved_fds, *files):
                os.close(fd)
            state.restore()
        out, err = (Path(p).read_bytes().decode("utf-8", "replace") for p in paths)
    return subprocess.CompletedProcess([sys.executable, "-m", "runner", *args], code, out, err)


def _call(main, argv: list[str]) -> int:
    """main(argv) as `python -m runner` runs it: SystemExit's code, or a traceback and 1."""
    try:
        main(argv)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return -signal.SIGINT  # an uncaught Ctrl-C ends the interpreter by SIGINT
    except BaseException:
        traceback.print_exc()
        return 1
    return 0
