"""The verbs that build models: train-prior (the diffusion UNet, `prior: unet`), index build
and index search (the reference index that adaptation retrieves neighbours from)."""

from __future__ import annotations

import typer

from restoreflow.cli.options import STORE_HELP
from restoreflow.cli.runtime import fail
from restoreflow.cli.store_checks import open_cli_store
from restoreflow.cli.typer_app import app, index_app


@app.command("train-prior")
def train_prior_cmd(
    out: str = typer.Option(..., "--out", help="Output directory (checkpoints, log, prior/)"),
    steps: int = typer.Option(16000, min=1, help="Optimiser steps"),
    batch_size: int = typer.Option(16, min=1, help="Crops per step"),
    device: str = typer.Option(None, help="torch device (default: settings.device)"),
    max_minutes: float = typer.Option(None, help="Stop after this many minutes"),
    images: list[str] = typer.Option(None, "--image", help="Training images (default: corpus)"),
    init_from: str = typer.Option(
        None, "--init-from", help="Start from this prior's weights (same architecture)"),
    threads: int = typer.Option(None, min=1, help="torch CPU threads (default: all cores)"),
    lr: float = typer.Option(2e-4, min=0.0, help="AdamW learning rate after the warm-up "
                             "(a lower one to fine-tune a prior with --init-from)"),
) -> None:
    """Train (or resume) the diffusion UNet prior; writes OUT/prior in diffusers format."""
    from restoreflow.flows.train_prior import train_prior_flow
    from restoreflow.watchdog import watch_this_process

    watch_this_process()
    from restoreflow.settings import get_settings

    path = train_prior_flow(out_dir=out, steps=steps, batch_size=batch_size,
                            device=device or get_settings().resolved_device(),
                            max_minutes=max_minutes, images=images or None,
                            init_from=init_from, num_threads=threads, lr=lr)
    typer.echo(f"prior written to {path}")


@index_app.command("build")
def index_build(
    corpus: list[str] = typer.Option(..., "--corpus", help="Reference images (sources)"),
    store: str = typer.Option(None, "--store", help=STORE_HELP),
    embedder: str = typer.Option("efficientnet-lite0", "--embedder",
                                 help="efficientnet-lite0 or clip:<dir-or-hub-id>"),
    name: str = typer.Option("default", "--name"),
) -> None:
    """Ingest a reference corpus and embed it (incremental)."""
    from restoreflow.retrieval.stored import build_index
    from restoreflow.settings import get_settings
    from restoreflow.storage.ingest import ingest as run_ingest

    ts = open_cli_store(store)
    with ts.lock("restoreflow index build", log=lambda m: typer.echo(m, err=True)):
        rep = run_ingest(corpus, ts, ts.settings, progress=True)
        for row in rep.rejected:
            typer.echo(f"REJECTED {row.source}: {row.reason}")
        ids = list(dict.fromkeys(r.image_id for r in rep.rows if r.image_id))
        info = build_index(ts, ids, name, embedder, get_settings().resolved_device())
    typer.echo(f"index {name}: {info['added']} added, {info['size']} images "
               f"({info['embedder']}, weights {info['weights_hash'][:12]})")


@index_app.command("search")
def index_search(
    image: str = typer.Argument(..., help="An image file"),
    k: int = typer.Option(5, "-k", min=1),
    store: str = typer.Option(None, "--store", help=STORE_HELP),
    name: str = typer.Option("default", "--name"),
) -> None:
    """Print the k reference images nearest to IMAGE, with scores."""
    import torch

    from restoreflow.models.embedders import get_embedder
    from restoreflow.retrieval.stored import load_index
    from restoreflow.storage.decode import ImageRejected
    from restoreflow.storage.readers import read_image
    from restoreflow.storage.values import normalisation, to_normalised

    ts = open_cli_store(store)
    index = load_index(ts, name)
    if index is None:
        fail(f"{ts.uri} has no index {name!r}; run `restoreflow index build`")
    try:
        arr, _ = read_image(open(image, "rb").read(), image)
    except (OSError, ImageRejected) as exc:
        fail(f"{image}: {exc}")
    x = torch.from_numpy(to_normalised(arr, *normalisation(arr)))
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
    emb = get_embedder(index.embedder_name)
    scores, ids = index.search(emb.embed(x[None].clamp(0, 1)).numpy(), k)
    for s, i in zip(scores[0], ids[0], strict=True):
        typer.echo(f"{s:.4f}  {i}  {ts.attrs('input', i).get('name', '')}")
