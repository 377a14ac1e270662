"""Retrieve the neighbours of a degraded image and adapt the prior on them (ADIR): a
LoRA trained on the neighbours, cached in the store by (image, prior, neighbours,
settings)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from restoreflow.degradation import seed_for
from restoreflow.retrieval.stored import load_index
from restoreflow.stages.config import RestoreConfig
from restoreflow.storage.layout import INPUT
from restoreflow.storage.store import TileStore


def retrieve_neighbours(store: TileStore, image_id: str, y: torch.Tensor, deg, k: int,
                        index_name: str, embedder: str, device: str) -> list[tuple[str, float]]:
    """The k reference images most similar to the prepared query (A^+ y, denoised);
    the image itself is never its own neighbour."""
    from restoreflow.models.embedders import get_embedder
    from restoreflow.retrieval.index import prepare_query

    index = load_index(store, index_name)
    if index is None or len(index.ids) == 0:
        raise ValueError(f"{store.uri}: no reference index {index_name!r}; "
                         "run `restoreflow index build` or set adapt.corpus")
    emb = get_embedder(embedder, device)
    index.check_embedder(emb.name, emb.weights_hash)
    q = prepare_query(y, deg.operator, deg.sigma_y)
    scores, ids = index.search(emb.embed(q[None].to(device)).cpu().numpy(), k + 1)
    out = [(str(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True)
           if str(i) != image_id]
    return out[:k]


def adapted_prior(store: TileStore, prior, image_id: str, neighbour_ids: list[str],
                  cfg: RestoreConfig, device: str, progress=None):
    """The prior with a LoRA trained on the neighbours, from the store's adapter cache
    when the same (image, prior, neighbours, settings) was adapted before."""
    from restoreflow.models.adapter_files import load_adapter, save_adapter
    from restoreflow.models.lora import adapt_prior, adapter_key

    lora = cfg.lora_settings()
    key = adapter_key(image_id, prior.model_hash, neighbour_ids, lora.hash)
    base = f"adapters/{key}"
    files = ("adapter_model.safetensors", "adapter_config.json", "restoreflow_adapter.json")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "adapter"
        if store.exists(f"{base}/{files[-1]}"):
            local.mkdir()
            for f in files:
                (local / f).write_bytes(store.get_bytes(f"{base}/{f}"))
            return load_adapter(prior, local), key, True
        imgs = [torch.from_numpy(store.read(INPUT, n, normalised=True)) for n in neighbour_ids]
        g = torch.Generator().manual_seed(seed_for(lora.hash, cfg.seed, image_id))
        adapted = adapt_prior(prior, imgs, lora, generator=g, progress=progress)
        save_adapter(adapted, local)
        for f in files[:-1] + files[-1:]:  # the marker file last
            store.put_bytes(f"{base}/{f}", (local / f).read_bytes())
        return adapted, key, False
