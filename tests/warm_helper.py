"""A spare MLflow helper for in-process test calls (tests/inprocess.py): it imports MLflow while
the previous test finishes, then waits to learn where the next call runs (its launch directory,
environment and output files, as the helper of a real `python -m runner` inherits them) before it
serves exactly like runner/store/helper.py's."""
from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":
    from runner import signals

    signals.ignore_interrupts()  # as the helper does first: the job decides what a signal means
    import mlflow.entities  # noqa: F401  (what the helper imports before serving)
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    line = sys.stdin.readline()
    if not line:  # never used: the test session ended
        os._exit(0)
    where = json.loads(line)
    os.chdir(where["cwd"])
    os.environ.clear()
    os.environ.update(where["env"])
    for fd, path in ((1, where["stdout"]), (2, where["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_APPEND), fd)
    from runner.store.helper import serve

    serve(int(sys.argv[1]))
