"""Reports: optimisers compared from what MLflow holds, in four stages.

- collect (`collect.py`): MLflow -> `RunData` tables; the only module here that reads MLflow.
- analyse (`analyse.py`, `profiles.py`, `leaderboard.py`, `accuracy.py`): labels, the solved
  test, costs, performance and data profiles, the leaderboards (sweeps use the same), NIST digits.
- render (`page.py`, `figures.py`, `sweep_figures.py`): report.html and the PNG figures.
- cli (`cli.py`): `python -m runner report` and `python -m runner accuracy`; `build.py` runs the
  stages in order for the command and for a sweep's parent run.
"""
from runner.report.analyse import cost_tables, judge, label
from runner.report.build import Report, write_report
from runner.report.collect import RunData
from runner.report.leaderboard import leaderboard

__all__ = ["Report", "RunData", "cost_tables", "judge", "label", "leaderboard", "write_report"]
