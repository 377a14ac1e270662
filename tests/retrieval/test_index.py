"""Reference index: exact top-k, incremental add, storage round-trip, faiss agreement."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from restoreflow.retrieval.index import (
    IndexMismatchError,
    ReferenceIndex,
    prepare_query,
    retrieval_accuracy,
)


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(e: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q @ e.T), axis=1, kind="stable")[:, :k]


@pytest.fixture()
def data():
    rng = np.random.default_rng(0)
    e = unit(rng, 500, 32)
    ids = [f"ref-{i:04d}" for i in range(500)]
    return e, ids, unit(rng, 20, 32)


def test_exact_search_matches_brute_force(data):
    e, ids, q = data
    index = ReferenceIndex(e, ids, "emb", "hash")
    # small blocks exercise the running top-k merge across blocks
    for block in (7, 4096):
        scores, got = index.search(q, k=10, block=block)
        want = brute_force(e, q, 10)
        assert got == [[ids[j] for j in row] for row in want]
        np.testing.assert_allclose(scores, np.take_along_axis(q @ e.T, want, 1), rtol=1e-5)
        assert scores.dtype == np.float32 and np.all(np.diff(scores, axis=1) <= 0)
    # a torch query works too, and k larger than N is clamped
    s, got = ReferenceIndex(e[:3], ids[:3], "emb", "hash").search(torch.from_numpy(q[:2]), k=5)
    assert s.shape == (2, 3) and len(got[0]) == 3


def test_duplicates_rank_by_row(data):
    e, ids, q = data
    index = ReferenceIndex(np.stack([e[0], e[0], e[1]]), ["a", "b", "c"], "emb", "hash")
    _, got = index.search(e[0], k=3, block=1)
    assert got[0][:2] == ["a", "b"]


def test_add_is_incremental_and_skips_duplicates(data):
    e, ids, q = data
    index = ReferenceIndex(e[:300], ids[:300], "emb", "hash")
    added = index.add(e[250:], ids[250:])
    assert added == ids[300:] and len(index) == 500
    assert index.add(e[:10], ids[:10]) == []
    full = ReferenceIndex(e, ids, "emb", "hash")
    assert index.search(q, 5)[1] == full.search(q, 5)[1]
    assert index.add(np.stack([e[0], e[0]]), ["new", "new"]) == ["new"]
    assert len(index) == 501 and "new" in index


def test_validation(data):
    e, ids, _ = data
    with pytest.raises(ValueError, match="duplicate id"):
        ReferenceIndex(e[:2], ["x", "x"], "emb", "hash")
    with pytest.raises(ValueError, match="L2-normalised"):
        ReferenceIndex(2 * e[:2], ["x", "y"], "emb", "hash")
    with pytest.raises(ValueError, match="ids for"):
        ReferenceIndex(e[:2], ["x"], "emb", "hash")
    index = ReferenceIndex(e[:2], ["x", "y"], "emb", "hash")
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones((1, 3), np.float32) / np.sqrt(3), 1)
    with pytest.raises(IndexMismatchError):
        index.check_embedder("emb", "other-hash")
    index.check_embedder("emb", "hash")


def test_arrays_round_trip(data):
    e, ids, q = data
    index = ReferenceIndex(e, ids, "efficientnet-lite0", "abc")
    arrays, meta = index.to_arrays()
    assert set(arrays) == {"embeddings", "ids"} and arrays["embeddings"].dtype == np.float32
    meta = json.loads(json.dumps(meta))  # JSON-able
    back = ReferenceIndex.from_arrays(arrays, meta)
    assert back.ids == ids and back.embedder_name == "efficientnet-lite0"
    assert np.array_equal(back.embeddings, e)
    assert back.search(q, 3)[1] == index.search(q, 3)[1]
    # ids stored as fixed-width or object strings also load
    arrays2 = {"embeddings": arrays["embeddings"], "ids": np.array(ids)}
    assert ReferenceIndex.from_arrays(arrays2, meta).ids == ids
    with pytest.raises(ValueError, match="metadata says"):
        ReferenceIndex.from_arrays(arrays, {**meta, "count": 3})
    with pytest.raises(ValueError, match="not a reference index"):
        ReferenceIndex.from_arrays(arrays, {**meta, "format": "x"})


def test_approximate_path_agrees_with_exact():
    faiss = pytest.importorskip("faiss")
    assert faiss is not None
    rng = np.random.default_rng(1)
    centres = unit(rng, 40, 64)
    pts = centres[rng.integers(0, 40, 4000)] + 0.15 * rng.standard_normal((4000, 64))
    pts = (pts / np.linalg.norm(pts, axis=1, keepdims=True)).astype(np.float32)
    ids = [str(i) for i in range(4000)]
    q = pts[:50] + 0.05 * rng.standard_normal((50, 64)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = ReferenceIndex(pts, ids, "emb", "h").search(q, 10, exact=True)[1]
    # probing every list: the IVF search is exhaustive, so it must agree exactly
    full = ReferenceIndex(pts, ids, "emb", "h", approx_threshold=100, nprobe=10_000)
    assert full.search(q, 10)[1] == exact
    # default probing on clustered data: high recall
    approx = ReferenceIndex(pts, ids, "emb", "h", approx_threshold=100, nprobe=8)
    got = approx.search(q, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)])
    assert recall > 0.9
    # added rows are searchable through the approximate index
    approx.add(q[:1], ["query-0"])
    assert approx.search(q[:1], 1)[1] == [["query-0"]]


def test_missing_faiss_falls_back_to_exact(data, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    e, ids, q = data
    index = ReferenceIndex(e, ids, "emb", "hash", approx_threshold=10)
    with pytest.warns(RuntimeWarning, match="faiss is not installed"):
        _, got = index.search(q, 4)
    assert got == [[ids[j] for j in row] for row in brute_force(e, q, 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.search(q, 4)  # warned once per index


def test_retrieval_accuracy():
    got = [["a", "b", "c"], ["x", "y", "a"], ["q", "r", "s"]]
    acc = retrieval_accuracy(got, ["a", "a", {"s", "t"}], ks=(1, 3))
    assert acc == {"top1": 1 / 3, "top3": 1.0}
    with pytest.raises(ValueError, match="result lists"):
        retrieval_accuracy(got, ["a"])


def _smooth_image(seed: int, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic").clamp(0, 1)


def test_prepare_query_denoises():
    from restoreflow.operators import Identity

    x = _smooth_image(0)
    g = torch.Generator().manual_seed(1)
    y = x + 0.1 * torch.randn(x.shape, generator=g)
    err_y = float((y.clamp(0, 1) - x).pow(2).mean())
    for denoiser in ("tv", "gaussian"):
        q = prepare_query(y, Identity(), 0.1, denoiser=denoiser)
        assert q.shape == x.shape and float(q.min()) >= 0 and float(q.max()) <= 1
        assert float((q - x).pow(2).mean()) < 0.5 * err_y, denoiser
    q3 = prepare_query(y[0], Identity(), 0.1)  # unbatched in, unbatched out
    assert q3.shape == x.shape[1:]
    assert torch.equal(prepare_query(y, Identity(), 0.1), prepare_query(y, Identity(), 0.1))


def test_prepare_query_fills_inpainting_holes():
    from restoreflow.operators import Inpainting

    x = _smooth_image(2)
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[16:40, 20:44] = False  # a large hole
    op = Inpainting(mask)
    y = op.A(x)
    plain = op.A_dagger(y)
    q = prepare_query(y, op, 0.0)
    hole = ~mask
    err_plain = float((plain - x)[..., hole].abs().mean())
    err_q = float((q - x)[..., hole].abs().mean())
    assert err_q < 0.5 * err_plain  # the hole is filled from its surroundings, not black
    assert torch.allclose(q[..., mask], x[..., mask], atol=1e-6)  # kept pixels untouched


def test_prepare_query_superres_shape():
    from restoreflow.operators import BoxDownsample

    x = _smooth_image(3)
    op = BoxDownsample(4)
    y = op.A(x) + 0.05 * torch.randn(op.A(x).shape, generator=torch.Generator().manual_seed(0))
    q = prepare_query(y, op, 0.05)
    assert q.shape == x.shape
    assert float((q - x).pow(2).mean()) < float((op.A_dagger(y) - x).pow(2).mean())
