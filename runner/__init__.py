"""An experiment runner for optimisation: problems and optimisers as plugins, Hydra configs,
PyTorch autograd, MLflow records. Run `python -m runner --help`."""

__version__ = "0.1.0"
