"""Hydra entry: register the plugins' configs, hand the command line to Hydra, close a sweep."""
from __future__ import annotations

import sys
from pathlib import Path



def _conf_dir() -> Path:
    """The configs: the installed package `runner.conf` (conf/ at the repository's top, mapped by
    pyproject.toml, for a wheel and an editable install alike), else conf/ beside this source tree
    (the code run from a checkout that is not installed)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("runner.conf")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path(__file__).resolve().parent.parent / "conf"


CONF_DIR = _conf_dir()


def launch(argv: list[str]) -> None:
    from runner import signals

    try:
        main = _prepare(argv)
    except KeyboardInterrupt as exc:  # importing torch, reading the plugins: before Hydra, before any run
        _stopped_before_a_run(exc)
    from runner import sweep, sweep_stop

    sys.argv = [sys.argv[0], *argv]
    signals.install()  # SIGTERM: the same clean-up as Ctrl-C, runs and the sweep's parent closed KILLED
    if {"-m", "--multirun"} & set(argv):
        signals.install_for_sweep(sweep.is_open, sweep_stop.stop_workers)  # parallel workers stopped first
    try:
        main()
    except KeyboardInterrupt as exc:
        signals.second_interrupt_exits()
        if not sweep.is_open() and sweep.outcome() is None:
            _stopped_before_a_run(exc)  # a run's task reports its own interrupts: this one came before any task or sweep
        sweep.finish(interrupted=True)
        sweep_stop.kill_leftover_workers()
        sys.exit(signals.exit_code(exc))
    finally:
        sweep.finish()  # closes a sweep's parent when Hydra did not (a job or the sweeper raised)
    outcome = sweep.outcome()
    if outcome is not None and outcome.status != "FINISHED":
        sys.exit(1)  # some job failed: the summary above lists which and why


def _stopped_before_a_run(exc: KeyboardInterrupt) -> None:
    from runner import signals

    kind = "SIGTERM" if isinstance(exc, signals.Terminated) else "Ctrl-C"
    print(f"Stopped: {kind} during start-up, before any run existed: nothing was recorded.", file=sys.stderr)
    sys.exit(signals.exit_code(exc))


def _prepare(argv: list[str]):
    """Everything before Hydra runs: the store's helper, the plugins' configs, the checks of the
    command line. Returns Hydra's entry point."""
    import hydra

    from runner import configs, preflight
    from runner.store.uri import fail_fast_over_http
    from runner.task import hydra_task

    preflight.check(argv)  # a missing extra, an ambiguous plugin name: before any run or folder exists
    fail_fast_over_http()
    import logging

    # The job folder's log file (Hydra's) is best-effort like every write there: a full disk is
    # reported once by the run's own warning, not by a logging traceback per line.
    logging.raiseExceptions = False
    if not {"-m", "--multirun"} & set(argv):  # a sweep starts it once it knows its launcher (runner.sweep)
        from runner.store.helper import prestart

        prestart()  # MLflow's import, in the helper, overlaps Hydra's composition and torch's import
    configs.register(argv)
    _check_source_names(argv)
    _check_overrides(argv)
    from runner import null_group, trust

    trust.install()  # hydra.* nodes that Hydra would instantiate are checked first (runner/trust.py)
    null_group.install()  # sched=null: no schedule, also as one value of a sweep (runner/null_group.py)
    return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(hydra_task)


def _check_overrides(argv: list[str]) -> None:
    """Keys, plugin names and values of every override (every job of a sweep), before Hydra makes a
    folder or a sweep opens its parent run (runner/override_check.py)."""
    from runner import override_check
    from runner.errors import UserError

    try:
        override_check.check(argv)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def _check_source_names(argv: list[str]) -> None:
    """`optim=lion` where the plugin source that has it (the zoo extra) is not installed: one
    paragraph naming the extra, exit 2, instead of Hydra's list of options. Only when a source is
    missing; otherwise Hydra's own message stands."""
    from runner import registry

    if not registry.missing_sources("optim"):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv if "=" in a and not a.startswith("-")])
    except Exception:  # Hydra reports a malformed override itself
        return
    known = set(registry.plugins("optim")) | set(registry.source_plugins("optim")) | set(registry.aliases("optim"))
    for override in overrides:
        if override.key_or_group != "optim" or override.value_type is ValueType.GLOB_CHOICE_SWEEP:
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(override.value())]
        for value in values:
            if value not in known:
                print(f"Error: {registry.unknown_name_message('optim', value)}", file=sys.stderr)
                sys.exit(2)
