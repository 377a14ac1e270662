"""The prior of a job, loaded once per worker process and device."""

from __future__ import annotations

import threading

_PRIORS: dict = {}
# One model job at a time per process: a device runs one model task at a time (Dask
# resources ensure it across workers; this covers thread-pool task runners), and peft's
# adapter injection is not thread-safe.
MODEL_LOCK = threading.RLock()


def load_prior(ref: str | None, device: str = "cpu"):
    """The prior at ``ref`` (None = shipped default), loaded once per process and device."""
    from restoreflow.models.prior import DiffusionPrior

    key = (ref, device)
    if key not in _PRIORS:
        _PRIORS[key] = DiffusionPrior.load(ref, device=device)
    return _PRIORS[key]


def prior_hash(ref: str | None) -> str:
    from restoreflow.models.prior import DEFAULT_PRIOR_DIR, hash_model_dir, resolve_model_path

    return hash_model_dir(resolve_model_path(ref or DEFAULT_PRIOR_DIR))
