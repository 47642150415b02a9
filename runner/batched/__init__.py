"""Sweeps at tensor speed: the batched launcher (hydra/launcher=batched). plan.py groups a sweep's
jobs by their overrides, prepare.py composes once per group and builds each job, launch.py runs
each batch and every other job, engine.py runs a batch as one program (optim.py: torch.optim's
rules with per-job hyperparameters), record.py keeps each job's own MLflow run."""
