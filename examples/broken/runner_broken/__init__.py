"""Plugins that break the contract (runner/contract.py), each in one way."""
import torch


class MisspelledHook:
    """`metric` instead of `metrics`: the engine would never call it."""

    def initial_params(self, generator, device, dtype):
        return {"x": torch.zeros(2, dtype=dtype).to(device)}

    def loss(self, params):
        return (params["x"] ** 2).sum()

    def metric(self, params):
        return {"norm": float(params["x"].norm())}


class NoLoss:
    """No `loss`: nothing to optimise."""

    def initial_params(self, generator, device, dtype):
        return {"x": torch.zeros(2, dtype=dtype).to(device)}

    def lost(self, params):
        return (params["x"] ** 2).sum()


def misspelled_declaration(params, lr: float = 0.1):
    return torch.optim.SGD(params, lr=lr)


misspelled_declaration.elementwize = True  # meant `elementwise`
