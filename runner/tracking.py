"""Transitional: the names report.py and accuracy.py import, until they use runner.store directly.
Everything else talks to MLflow through runner/store/."""
from __future__ import annotations

from runner.store.uri import check_reachable, resolve_uri, unclip

__all__ = ["check_reachable", "client_for", "resolve_uri", "unclip"]


def client_for(uri: str):
    """The in-process TrackingClient (runner.store.connect(uri, in_process=True))."""
    from runner.store import connect

    return connect(uri, in_process=True)
