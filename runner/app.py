"""Hydra entry: register the plugins' configs, then hand the command line to Hydra."""
from __future__ import annotations

import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def launch(argv: list[str]) -> None:
    import hydra

    from runner import configs
    from runner.task import hydra_task

    configs.register()
    main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(hydra_task)
    sys.argv = [sys.argv[0], *argv]
    main()
