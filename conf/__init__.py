"""The configs, installed as the package `runner.conf` (pyproject.toml maps it onto this folder):
Hydra reads the YAML files here; this file only makes the folder a package."""
