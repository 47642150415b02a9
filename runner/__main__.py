"""`python -m runner [SUBCOMMAND] [OVERRIDES]`: subcommands first, everything else goes to Hydra.

`--help` is answered here from package metadata alone, without importing torch or mlflow.
"""
from __future__ import annotations

import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    # name: (module:function, one-line description)
    "sync": ("runner.sync:main", "upload job records that did not reach MLflow (server down), exactly once"),
    "reap": ("runner.reap:main", "mark RUNNING runs whose heartbeat stopped (killed process) as KILLED"),
    "report": ("runner.report.cli:report_main", "comparison report (HTML, figures, leaderboard.csv) of an experiment or sweep, from MLflow"),
    "accuracy": ("runner.report.cli:accuracy_main", "digits (min LRE) per NIST dataset and optimiser, from MLflow"),
}

HELP = """\
usage: python -m runner [problem=NAME] [optim=NAME] [KEY=VALUE ...]      one experiment
       python -m runner -m KEY=A,B [KEY=C,D ...]                       a sweep (Hydra multirun)
       python -m runner SUBCOMMAND [ARGS]                                see below

Problems (problem=NAME; their arguments are problem.ARG=VALUE):
  {problems}
Optimisers (optim=NAME; their arguments are optim.ARG=VALUE):
  {optims}
Learning-rate schedules (sched=NAME, optional; sched.ARG=VALUE):
  {scheds}
Presets: experiment={experiments}   hparams_search={searches}

Trainer and tracking keys (defaults in brackets):
  trainer.steps [1000]  trainer.seed [0]  trainer.device [auto|cpu|cuda|cuda:N]
  trainer.dtype [auto|float32|float64]  trainer.tol [null]  trainer.log_every [10]
  trainer.check_every [10]  trainer.progress [auto|bar|lines|off]  trainer.replicas [1]
  trainer.compile [auto|true|false]
  tracking.uri [sqlite:///mlflow.db in this directory]  tracking.experiment [runner]
{subcommands}
See every key with its value:  python -m runner --cfg job [OVERRIDES]
A plugin's arguments:          python -m runner --cfg job --package problem problem=NAME
Hydra's own options:           python -m runner --hydra-help
Open the record:               mlflow ui --backend-store-uri sqlite:///mlflow.db
"""


def _presets(group: str) -> str:
    from runner.app import CONF_DIR

    names = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    return ",".join(names) or "(none)"


def print_help() -> None:
    from runner import registry

    subs = "".join(f"\n  {name:<10} {desc}" for name, (_, desc) in SUBCOMMANDS.items())
    print(
        HELP.format(
            problems=", ".join(registry.plugins("problem")) or "(none: pip install -e .)",
            optims=", ".join(registry.plugins("optim")) or "(none: pip install -e .)",
            scheds=", ".join(registry.plugins("sched")) or "(none)",
            experiments=_presets("experiment"),
            searches=_presets("hparams_search"),
            subcommands=("\nSubcommands:" + subs + "\n") if subs else "",
        )
    )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print_help()
        return
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        target, _ = SUBCOMMANDS[argv[0]]
        module, func = target.split(":")
        sys.exit(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
    from runner.app import launch

    launch(argv)


def exit_now(code) -> None:
    """Leave without finalising the interpreter: with torch and its compiler stack loaded, tearing
    down every module takes about a second after the work is done. Everything of ours is closed by
    then (the record is in the store, files are written); the atexit handlers (logging's flush
    among them) still run. A process with other threads or child processes at work exits the
    normal way, so that they are waited for."""
    import atexit
    import multiprocessing
    import os
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()) or multiprocessing.active_children():
        sys.exit(code)
    atexit._run_exitfuncs()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exc:
        exit_now(exc.code)
    except BrokenPipeError:  # `python -m runner --help | head`: the reader left, nothing to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        exit_now(1)
    exit_now(0)
