"""Hydra entry: register the plugins' configs, hand the command line to Hydra, close a sweep."""
from __future__ import annotations

import os
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def launch(argv: list[str]) -> None:
    import hydra

    from runner import configs
    from runner.task import hydra_task

    from runner import sweep
    from runner.tracking import fail_fast_over_http

    fail_fast_over_http()
    if not {"-m", "--multirun"} & set(argv):  # a sweep starts it once it knows its launcher (runner.sweep)
        from runner.recorder import prestart

        prestart()  # MLflow's import, in the helper, overlaps Hydra's composition and torch's import
    configs.register()
    main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(hydra_task)
    sys.argv = [sys.argv[0], *argv]
    import signal

    from runner.task import Terminated

    def on_sigterm(signum, frame):
        raise Terminated()  # the same clean-up as Ctrl-C: runs and the sweep's parent closed KILLED

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        main()
    except KeyboardInterrupt as exc:
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # a second Ctrl-C leaves at once
        sweep.finish(interrupted=True)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    finally:
        sweep.finish()  # closes a sweep's parent when Hydra did not (a job or the sweeper raised)
    if sweep.last_outcome and sweep.last_outcome["status"] != "FINISHED":
        sys.exit(1)  # some job failed: the summary above lists which and why
