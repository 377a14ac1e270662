"""Retrieve the neighbours of a degraded image and adapt the prior on them (ADIR): a
LoRA trained on the neighbours, cached in the store by (image, prior, neighbours,
settings).

Retrieval compares like with like: the query is the degraded image made presentable
(``prepare_query``), and by default (``adapt.match_degradation``) the reference corpus is
indexed the same way, each reference degraded by the run's operator and noise with its
own draw (``index/<name>@<degradation hash>``, built once per degradation, incremental).
Against the clean corpus a blurred photo finds star fields: 14% of its neighbours were
photos, 80% against the degraded corpus (benchmarks/results/explore_retrieval_degraded.md).
"""

from __future__ import annotations

import logging
import shlex
import tempfile
from pathlib import Path

import torch

from restoreflow.degradation import DegradationSpec, make_generator, seed_for
from restoreflow.retrieval.stored import build_index, load_index, matched_index_name
from restoreflow.stages.config import RestoreConfig
from restoreflow.storage.layout import INPUT
from restoreflow.storage.store import TileStore

log = logging.getLogger(__name__)


def degraded_like(spec: DegradationSpec, seed: int):
    """``prepare(ref_id, x)`` for :func:`build_index`: the reference degraded by ``spec``
    (built for RGB as the restore stage builds it; generator seeded by (spec, seed,
    ``<ref_id>/reference``), never a query's draw) and made presentable as a query is.
    A reference the operator cannot take (e.g. a mask file of another size) is embedded
    clean, with a warning."""
    from restoreflow.retrieval.index import prepare_query

    def prepare(ref_id: str, x: torch.Tensor) -> torch.Tensor:
        c, h, w = x.shape
        g = make_generator(spec, seed, f"{ref_id}/reference")
        try:
            deg = spec.build((max(c, 3), h, w), generator=g)
            y = deg.apply(x.expand(3, -1, -1)[None].float() if c == 1 else x[None].float(), g)
        except ValueError as exc:
            log.warning("reference %s indexed clean: %s cannot degrade it (%s)", ref_id,
                        spec.text, exc)
            return x
        return prepare_query(y[0].float(), deg.operator, deg.sigma_y)

    return prepare


def build_reference_index(store: TileStore, image_ids: list[str], name: str, embedder: str,
                          device: str) -> dict:
    """Index the stored reference images ``image_ids`` (the clean corpus) as ``name``;
    returns the index's description (its ``size`` among others)."""
    return build_index(store, image_ids, name, embedder, device)


def stored_index(store: TileStore, name: str):
    """The reference index ``name``; ValueError saying how to make one if it is missing
    or empty."""
    from restoreflow.storage.sources import strip_credentials

    index = load_index(store, name)
    if index is None or len(index.ids) == 0:
        where = shlex.quote(strip_credentials(store.uri))
        raise ValueError(f"the store holds no reference index {name!r} to retrieve "
                         f"neighbours from: run 'restoreflow index build --corpus SRC "
                         f"--store {where}' first")
    return index


def build_matched_index(store: TileStore, name: str, spec: DegradationSpec, seed: int,
                        embedder: str, device: str, progress=None) -> dict:
    """Index the references of index ``name`` degraded like the queries of ``spec``."""
    clean = stored_index(store, name)
    return build_index(store, [str(i) for i in clean.ids], matched_index_name(name, spec.hash),
                       embedder, device, progress, degraded_like(spec, seed))


def retrieve_neighbours(store: TileStore, image_id: str, y: torch.Tensor, deg, k: int,
                        index_name: str, embedder: str, device: str) -> list[tuple[str, float]]:
    """The k reference images most similar to the prepared query (A^+ y, denoised) in
    index ``index_name`` (the clean corpus or :func:`matched_index_name`'s); the image
    itself is never its own neighbour."""
    from restoreflow.models.embedders import get_embedder
    from restoreflow.retrieval.index import prepare_query

    index = stored_index(store, index_name)
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
