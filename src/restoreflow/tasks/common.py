"""Helpers shared by the Prefect tasks: reopen the store in the worker process."""

from __future__ import annotations

from restoreflow.settings import get_settings
from restoreflow.storage.store import TileStore


def open_store(uri: str) -> TileStore:
    """The store at ``uri`` with this process's settings (credentials from its env)."""
    return TileStore(uri, get_settings())
