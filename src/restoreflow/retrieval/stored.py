"""Reference indexes kept in a store: ``index/<name>/`` (safetensors + JSON), built
incrementally from the store's ``input`` images."""

from __future__ import annotations

import json

import numpy as np
import torch

from restoreflow.storage.layout import INPUT
from restoreflow.storage.store import TileStore


def index_paths(name: str) -> tuple[str, str]:
    return f"index/{name}/embeddings.safetensors", f"index/{name}/index.json"


def save_index(store: TileStore, index, name: str = "default") -> None:
    from safetensors.numpy import save

    arrays, meta = index.to_arrays()
    emb_path, meta_path = index_paths(name)
    meta = {**meta, "ids": [str(i) for i in arrays["ids"]]}
    store.put_bytes(emb_path, save({"embeddings": np.ascontiguousarray(arrays["embeddings"])}))
    store.put_bytes(meta_path, json.dumps(meta).encode())


def load_index(store: TileStore, name: str = "default"):
    """The reference index stored under ``index/<name>`` (safetensors + JSON), or None."""
    from safetensors.numpy import load

    from restoreflow.retrieval.index import ReferenceIndex

    emb_path, meta_path = index_paths(name)
    if not store.exists(meta_path):
        return None
    meta = json.loads(store.get_bytes(meta_path))
    emb = load(store.get_bytes(emb_path))["embeddings"]
    ids = np.array(meta.pop("ids"), dtype=np.dtypes.StringDType())
    return ReferenceIndex.from_arrays({"embeddings": emb, "ids": ids}, meta)


def matched_index_name(name: str, spec_hash: str) -> str:
    """The index of corpus ``name`` degraded like the queries of one degradation."""
    return f"{name}@{spec_hash[:12]}"


def build_index(store: TileStore, image_ids: list[str], name: str = "default",
                embedder: str = "efficientnet-lite0", device: str = "cpu",
                progress=None, prepare=None) -> dict:
    """Embed the images not yet in index ``name`` and save it (incremental).
    ``prepare(image_id, x)`` (x a (C, H, W) tensor in [0, 1]) turns each image into what
    is embedded (e.g. the image degraded like the queries); default the image itself."""
    from restoreflow.models.embedders import embed_images, get_embedder
    from restoreflow.retrieval.index import ReferenceIndex

    emb = get_embedder(embedder, device)
    index = load_index(store, name)
    if index is None:
        index = ReferenceIndex.empty(emb.dim, emb.name, emb.weights_hash)
    else:
        index.check_embedder(emb.name, emb.weights_hash)
    have = set(index.ids)
    todo = [i for i in image_ids if i not in have]
    for k in range(0, len(todo), 8):
        chunk = todo[k : k + 8]
        imgs = [torch.from_numpy(store.read(INPUT, i, normalised=True)) for i in chunk]
        if prepare is not None:
            imgs = [prepare(i, x) for i, x in zip(chunk, imgs, strict=True)]
        index.add(embed_images(emb, imgs).cpu().numpy(), chunk)
        if progress:
            progress(min(k + 8, len(todo)), len(todo))
    if todo:
        save_index(store, index, name)
    return {"index": name, "added": len(todo), "size": len(index.ids),
            "embedder": emb.name, "weights_hash": emb.weights_hash}
