"""The prior of a job, loaded once per worker process and device."""

from __future__ import annotations

import threading

_PRIORS: dict = {}
# One model job at a time per process: a device runs one model task at a time (Dask
# resources ensure it across workers; this covers thread-pool task runners), and peft's
# adapter injection is not thread-safe.
MODEL_LOCK = threading.RLock()


def load_prior(ref: str | None, device: str = "cpu"):
    """The prior ``ref`` names (None = the default; :mod:`restoreflow.models.priors`),
    loaded once per process and device."""
    from restoreflow.models import priors

    key = (priors.canonical(ref), device)
    if key not in _PRIORS:
        from restoreflow.models.allocator import tune_allocator

        tune_allocator()  # model work in this process: keep step tensors in the heap
        _PRIORS[key] = priors.load(ref, device=device)
    return _PRIORS[key]


def prior_hash(ref: str | None) -> str:
    from restoreflow.models import priors

    return priors.prior_hash(ref)
