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
  {optims}{sources}
Learning-rate schedules (sched=NAME, optional; sched.ARG=VALUE):
  {scheds}
Presets: experiment={experiments}   hparams_search={searches}
Launchers (-m hydra/launcher=NAME; default basic, one job after another):
  batched (jobs that differ only in seeds and numeric optim./sched. values run as one batched
  program, each still its own run; the rest one by one), joblib, ray, submitit_local (extras);
  presets: {launchers}

Trainer and tracking keys (defaults in brackets):
  trainer.steps [1000]  trainer.seed [0]  trainer.device [auto|cpu|cuda|cuda:N]
  trainer.dtype [auto|float32|float64]  trainer.tol [null]  trainer.log_every [10]
  trainer.check_every [10]  trainer.progress [auto|bar|lines|off]  trainer.replicas [1]
  trainer.compile [auto|true|false]
  tracking.uri [sqlite:///mlflow.db in this directory]  tracking.experiment [runner]
  tracking.run_name [built]  tracking.skip_finished [false]  tracking.artifacts [true]
Any other key (with or without +) is refused before anything runs, with the nearest valid one;
in a sweep, one bad value anywhere refuses the whole sweep (nothing runs). hydra.* is Hydra's.
{subcommands}
See every key with its value:  python -m runner --cfg job [OVERRIDES]
A plugin's arguments:          python -m runner --cfg job --package problem problem=NAME
Every optimiser, with needs:   python -m runner --help optim
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
            problems=_plugins_help("problem") or "(none: pip install -e .)",
            optims=_plugins_help("optim") or "(none: pip install -e .)",
            sources=_sources_help(),
            scheds=_plugins_help("sched") or "(none)",
            experiments=_presets("experiment"),
            searches=_presets("hparams_search"),
            launchers=_presets("hydra/launcher"),
            subcommands=("\nSubcommands:" + subs + "\n") if subs else "",
        )
    )


def _plugins_help(kind: str) -> str:
    """The plugins of one kind, one line per distribution that registers them (package metadata
    only); a name several distributions register, with the qualified names that choose one."""
    from runner import registry

    by_dist: dict[str, list[str]] = {}
    ambiguous = registry.ambiguous(kind)
    qualified = {q for names in ambiguous.values() for q in names}
    for name, plugin in registry.plugins(kind).items():
        if name not in qualified:
            by_dist.setdefault(plugin.distribution, []).append(name)
    lines = [f"{', '.join(names)}   [{dist}]" for dist, names in by_dist.items()]
    lines += [f"{name}: registered by {len(names)} distributions, choose " + " or ".join(f"{kind}={q}" for q in names)
              for name, names in ambiguous.items()]
    return "\n  ".join(lines)


def _sources_help() -> str:
    """One line per plugin source, from package metadata only (its library is not imported)."""
    from runner import registry

    lines = []
    for src in registry.sources("optim").values():
        state = f"not installed: {src.install}" if src.problem and src.install else (src.problem or src.version)
        lines.append(f"\n  + optim={src.name}.NAME or a plain NAME no other has: {src.description} [{state}]")
    return "".join(lines) + ("\n    (python -m runner --help optim lists every optimiser and what it needs)" if lines else "")


def print_optimizers() -> None:
    """`--help optim`: every optimiser, where it comes from and what it asks of the loop (imports
    the plugin sources' libraries, so it takes a second or two)."""
    import textwrap

    from runner import needs, registry

    def fill(text: str, indent: str = "  ") -> str:
        return textwrap.fill(text, 100, initial_indent=indent, subsequent_indent=indent + "  ")

    print("Optimisers: optim=NAME, arguments optim.ARG=VALUE; python -m runner --cfg job --package optim optim=NAME\n"
          "shows an optimiser's arguments and defaults. * = elementwise (trainer.replicas batches it).")
    groups: dict[str, list] = {}
    for name, plugin in registry.plugins("optim").items():
        elementwise = needs.of(plugin.load(), name).elementwise
        groups.setdefault(plugin.source, []).append(name + ("*" if elementwise else ""))
    for source, names in groups.items():
        print(f"\nfrom {source} ({len(names)}):\n" + fill("  ".join(names)))
    aliases = registry.aliases("optim")
    for src in registry.sources("optim").values():
        offered = {n: p for n, p in registry.source_plugins("optim").items() if n.startswith(src.name + ".")}
        print(f"\nfrom the plugin source '{src.name}': {src.description} {src.version}")
        if src.problem:
            print(fill(f"not usable: {src.problem}"))
            continue
        found = {name: needs.of(plugin.load(), name) for name, plugin in offered.items()}
        shadowed = [n.split(".", 1)[1] for n in offered if n.split(".", 1)[1] not in aliases]
        print(fill(f"{len(offered)} optimisers, as optim={src.name}.NAME or plain NAME; plain "
                   f"{', '.join(shadowed) or 'names'} keep meaning the built-in ones above."))
        print(fill("  ".join(n.split(".", 1)[1] + ("*" if d.elementwise else "") for n, d in found.items() if not d.refused)))
        kinds = [("the backward keeps its graph (Hessian-vector products)", lambda d: d.create_graph),
                 ("train() before the first step, eval() before the result", lambda d: d.train_eval),
                 ("the gradient exists before each step", lambda d: d.grad_before_step),
                 ("matrix parameters (refused on a problem without them)", lambda d: d.needs_matrix)]
        print("  needs the loop honours:")
        for what, has in kinds:
            names = [n.split(".", 1)[1] for n, d in found.items() if has(d) and not d.refused]
            if names:
                print(fill(f"{what}: {', '.join(names)}", "    "))
        steps = [n.split(".", 1)[1] for n, p in offered.items() if "total_steps" in _signature(p.load())]
        if steps:
            print(fill(f"trainer.steps as the length of a built-in schedule: {', '.join(steps)}", "    "))
        refused = {n: d.refused for n, d in found.items() if d.refused}
        if refused:
            print(f"  refused here ({len(refused)}), with the reason shown when selected:")
            for name, why in refused.items():
                print(fill(f"{name.split('.', 1)[1]}: {why}", "    "))


def _signature(factory) -> set:
    import inspect

    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        if argv[1:2] == ["optim"]:
            print_optimizers()
        else:
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
    except KeyboardInterrupt:  # before the entry point's own handlers (importing the runner itself)
        subcommand = sys.argv[1:2] and sys.argv[1] in SUBCOMMANDS
        print("Stopped: Ctrl-C." if subcommand else "Stopped: Ctrl-C during start-up, before any run existed: nothing was recorded.",
              file=sys.stderr)
        exit_now(130)
    except BrokenPipeError:  # `python -m runner --help | head`: the reader left, nothing to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        exit_now(1)
    exit_now(0)
