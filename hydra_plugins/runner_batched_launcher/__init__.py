"""A Hydra launcher that runs a sweep's jobs as batched tensor programs, chosen with
hydra/launcher=batched (conf/hydra/launcher/batched.yaml). Hydra only instantiates launchers found
in the `hydra_plugins` namespace package, hence this folder; the work is runner/batched/."""
