"""Flow: train the default diffusion prior (resumable from its checkpoints)."""

from prefect import flow

from restoreflow.tasks import names
from restoreflow.tasks.training import train_prior_task


@flow(name="train-prior", flow_run_name=names.train_prior_flow_name)
def train_prior_flow(
    out_dir: str,
    steps: int = 16000,
    batch_size: int = 16,
    device: str = "cpu",
    max_minutes: float | None = None,
    images: list[str] | None = None,
    num_threads: int | None = None,
    seed: int = 0,
    init_from: str | None = None,
    lr: float = 2e-4,
) -> str:
    """Train on ``images`` (default: the project's photo corpus) and export the EMA prior."""
    from restoreflow.models.corpus import training_sets

    train, evals = training_sets(images)
    config = dict(out_dir=out_dir, steps=steps, batch_size=batch_size, device=device,
                  max_minutes=max_minutes, num_threads=num_threads, seed=seed,
                  init_from=init_from, lr=lr)
    return train_prior_task(config, train, evals)
