"""Prefect task around prior training (thin wrapper over models.training)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE


@task(name="train-prior", task_run_name="train-prior -> {config[out_dir]}",
      cache_policy=NO_CACHE)
def train_prior_task(config: dict, train_files: list[str], eval_files: list[str]) -> str:
    from restoreflow.models.training import TrainConfig, center_crops, train_prior

    cfg = TrainConfig(**config)
    evals = center_crops([Path(f) for f in eval_files]) if eval_files else None
    return str(train_prior(cfg, [Path(f) for f in train_files], evals))
