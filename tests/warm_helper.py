"""The MLflow helper of in-process test calls (tests/inprocess.py): runner/store/helper.py's own
`serve`, in one process kept by the test worker for call after call, so that MLflow is imported
once per worker rather than once per call. One request is added, `_place`, which a call sends
right after `bind`: the launch directory, environment and output files that the helper of a real
`python -m runner` inherits at its start. At the end of a call the worker asks for
`_close_abandoned` (what the helper does when its job's process ends) and places it nowhere."""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from runner import signals

    signals.ignore_interrupts()  # as serve() does first: the job decides what a signal means
    import mlflow.entities  # noqa: F401  (what serve() imports, now, while the worker carries on)
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import store_template
    from runner.store import helper

    store_template.install()

    def place(cwd: str, env: dict, stdout: str, stderr: str) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        for fd, path in ((1, stdout), (2, stderr)):
            opened = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.dup2(opened, fd)
            os.close(opened)
        store_template.forget_engines()

    commands = helper._commands
    helper._commands = lambda uri: {**commands(uri), "_place": place}
    helper.serve(int(sys.argv[1]))
