"""A Hydra sweeper on current Optuna (4.x and newer), chosen with hydra/sweeper=optuna.

Hydra only instantiates sweepers found in the `hydra_plugins` namespace package, hence this
folder. The official hydra-optuna-sweeper pins optuna<3, which cannot share an environment
with MLflow's SQLAlchemy 2.
"""
