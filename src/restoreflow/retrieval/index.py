"""Reference index: nearest reference images of a (degraded) query by embedding similarity.

Pure core, storage-agnostic. Embeddings are unit vectors ``e_i`` (rows of E, N x D,
float32) from one embedder; the score of reference i for a query q is the cosine
similarity ``s_i = <q, e_i>`` and ``search`` returns the k largest, best first.

- Exact search (default): ``S = Q E^T`` in blocks of queries and references (memory
  bounded by ``block`` x ``block`` scores), keeping a running top-k. Results are deterministic;
  equal scores are listed lower row index first.
- Approximate search (when N > ``approx_threshold`` and faiss is installed): a faiss
  inner-product IVF index (``IndexIVFFlat``, nlist ~ 4 sqrt(N) lists, ``nprobe`` lists
  searched), trained with faiss' seeded k-means. Without faiss the exact path is used
  and a warning says so once per index.

``to_arrays`` / ``from_arrays`` give numpy arrays plus a small JSON-able dict, which the
storage layer writes (e.g. to zarr).

``prepare_query`` turns a degraded observation y into an image an embedder can compare
with clean references: ``A^+ y``, the null space filled by normalised convolution, then
a denoiser whose strength follows the noise left after ``A^+``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch

log = logging.getLogger(__name__)

FORMAT = "restoreflow.reference-index"
FORMAT_VERSION = 1
DEFAULT_APPROX_THRESHOLD = 200_000
NORM_TOLERANCE = 1e-3

Denoiser = Literal["tv", "gaussian", "none"]


class IndexMismatchError(ValueError):
    """Embeddings from a different embedder (name or weights) than the index."""


def _as_unit_rows(x: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"{what} must be a (N, D) array, got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{what} have dimension {a.shape[1]}, the index has {dim}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.size and not np.isfinite(a).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(a, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1) > NORM_TOLERANCE)
    if bad.size:
        raise ValueError(
            f"{what} must be L2-normalised: row {int(bad[0])} has norm {norms[bad[0]]:.4f}"
        )
    return a


class ReferenceIndex:
    """Unit-norm embeddings of reference images with their ids; top-k cosine search."""

    def __init__(
        self,
        embeddings: np.ndarray,
        ids: Sequence[str],
        embedder_name: str,
        weights_hash: str,
        approx_threshold: int = DEFAULT_APPROX_THRESHOLD,
        nprobe: int = 32,
    ) -> None:
        ids = [str(i) for i in ids]
        emb = np.asarray(embeddings)
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be a (N, D) array, got shape {emb.shape}")
        self.embeddings = _as_unit_rows(emb, None, "embeddings")
        if len(ids) != self.embeddings.shape[0]:
            raise ValueError(f"{len(ids)} ids for {self.embeddings.shape[0]} embeddings")
        self.ids: list[str] = ids
        self._pos: dict[str, int] = {}
        for i, name in enumerate(ids):
            if name in self._pos:
                raise ValueError(f"duplicate id {name!r} at rows {self._pos[name]} and {i}")
            self._pos[name] = i
        self.embedder_name = embedder_name
        self.weights_hash = weights_hash
        self.approx_threshold = int(approx_threshold)
        self.nprobe = int(nprobe)
        self._faiss = None  # faiss index over rows [0, _faiss_rows)
        self._faiss_rows = 0
        self._warned_no_faiss = False

    # -- basic properties -------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._pos

    def check_embedder(self, embedder_name: str, weights_hash: str) -> None:
        """Raise IndexMismatchError unless queries come from this index's embedder."""
        if (embedder_name, weights_hash) != (self.embedder_name, self.weights_hash):
            raise IndexMismatchError(
                f"index built with {self.embedder_name} ({self.weights_hash[:12]}), "
                f"queries from {embedder_name} ({weights_hash[:12]})"
            )

    # -- updates ----------------------------------------------------------------------
    def add(self, embeddings: np.ndarray, ids: Sequence[str]) -> list[str]:
        """Append references whose id is not yet present; returns the ids added.

        Ids already in the index (or repeated within ``ids``) are skipped, so re-adding
        a batch after a crash is harmless.
        """
        ids = [str(i) for i in ids]
        emb = _as_unit_rows(embeddings, self.dim, "embeddings")
        if len(ids) != emb.shape[0]:
            raise ValueError(f"{len(ids)} ids for {emb.shape[0]} embeddings")
        keep, seen = [], set()
        for i, name in enumerate(ids):
            if name in self._pos or name in seen:
                continue
            seen.add(name)
            keep.append(i)
        if not keep:
            return []
        start = len(self.ids)
        self.embeddings = np.concatenate([self.embeddings, emb[keep]], axis=0)
        for j, i in enumerate(keep):
            self.ids.append(ids[i])
            self._pos[ids[i]] = start + j
        return [ids[i] for i in keep]

    # -- search -----------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray | torch.Tensor,
        k: int,
        exact: bool | None = None,
        block: int = 4096,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k references of each query: (scores (Q, k') float32, ids Q x k').

        ``k' = min(k, N)``; scores are cosine similarities, best first. ``exact=None``
        picks the approximate faiss path when N > ``approx_threshold`` and faiss is
        installed; ``exact=True`` forces the exact path, ``exact=False`` asks for faiss.
        """
        if isinstance(queries, torch.Tensor):
            queries = queries.detach().cpu().float().numpy()
        q = _as_unit_rows(queries, self.dim, "queries")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(int(k), len(self))
        if k == 0 or q.shape[0] == 0:
            return np.zeros((q.shape[0], k), np.float32), [[] for _ in range(q.shape[0])]
        want_approx = (len(self) > self.approx_threshold) if exact is None else not exact
        if want_approx and self._ensure_faiss():
            scores, rows = self._search_faiss(q, k)
        else:
            scores, rows = self._search_exact(q, k, block)
        return scores, [[self.ids[r] for r in row] for row in rows]

    def _search_exact(self, q: np.ndarray, k: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        nq, n = q.shape[0], len(self)
        best_s = np.empty((nq, k), np.float32)
        best_i = np.empty((nq, k), np.int64)
        for q0 in range(0, nq, block):
            qb = q[q0 : q0 + block]
            cand_s = np.full((qb.shape[0], 0), -np.inf, np.float32)
            cand_i = np.zeros((qb.shape[0], 0), np.int64)
            for r0 in range(0, n, block):
                s = qb @ self.embeddings[r0 : r0 + block].T  # (q, r) cosine similarities
                idx = np.broadcast_to(np.arange(r0, r0 + s.shape[1]), s.shape)
                cand_s = np.concatenate([cand_s, s], axis=1)
                cand_i = np.concatenate([cand_i, idx], axis=1)
                if cand_s.shape[1] > k:
                    cand_s, cand_i = _top_k(cand_s, cand_i, k)
            cand_s, cand_i = _top_k(cand_s, cand_i, k)
            best_s[q0 : q0 + block], best_i[q0 : q0 + block] = cand_s, cand_i
        return best_s, best_i

    def _ensure_faiss(self) -> bool:
        """Build (or extend) the faiss IVF index; False when faiss is not installed."""
        try:
            import faiss
        except ImportError:
            if not self._warned_no_faiss:
                msg = (
                    f"faiss is not installed: exact search over {len(self)} references "
                    "(pip install faiss-cpu for the approximate index)"
                )
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
                log.warning(msg)
                self._warned_no_faiss = True
            return False
        n = len(self)
        if self._faiss is None:
            nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 per list
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = 1234  # k-means seed: the same data gives the same index
            index.train(self.embeddings)
            index.add(self.embeddings)
            self._faiss, self._faiss_rows = (index, quantizer), n
        elif self._faiss_rows < n:
            self._faiss[0].add(self.embeddings[self._faiss_rows :])
            self._faiss_rows = n
        self._faiss[0].nprobe = min(self.nprobe, self._faiss[0].nlist)
        return True

    def _search_faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self._faiss[0].search(q, k)
        if (rows < 0).any():  # fewer than k found in the probed lists: fall back to exact
            return self._search_exact(q, k, 4096)
        return scores.astype(np.float32), rows.astype(np.int64)

    # -- storage ----------------------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """({"embeddings": (N, D) float32, "ids": (N,) str}, JSON-able metadata)."""
        arrays = {
            "embeddings": self.embeddings.copy(),
            "ids": np.array(self.ids, dtype=np.dtypes.StringDType()),
        }
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "embedder_name": self.embedder_name,
            "weights_hash": self.weights_hash,
            "dim": self.dim,
            "count": len(self),
        }
        return arrays, meta

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], meta: Mapping, **kwargs
    ) -> ReferenceIndex:
        """Inverse of :meth:`to_arrays` (ids may be any array or list of strings)."""
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a reference index (format {meta.get('format')!r})")
        if int(meta.get("version", -1)) > FORMAT_VERSION:
            raise ValueError(f"reference index version {meta['version']} is newer than this code")
        for key in ("embeddings", "ids"):
            if key not in arrays:
                raise ValueError(f"reference index arrays lack {key!r}")
        ids = [str(i) for i in np.asarray(arrays["ids"]).tolist()]
        emb = np.asarray(arrays["embeddings"])
        index = cls(emb, ids, meta["embedder_name"], meta["weights_hash"], **kwargs)
        if index.dim != int(meta["dim"]) or len(index) != int(meta["count"]):
            raise ValueError(
                f"reference index metadata says {meta['count']} x {meta['dim']}, "
                f"arrays are {len(index)} x {index.dim}"
            )
        return index

    @classmethod
    def empty(cls, dim: int, embedder_name: str, weights_hash: str, **kwargs) -> ReferenceIndex:
        return cls(np.zeros((0, dim), np.float32), [], embedder_name, weights_hash, **kwargs)


def _top_k(s: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k largest scores (ties: lower index first), sorted best first."""
    if s.shape[1] > k:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        s, i = np.take_along_axis(s, part, 1), np.take_along_axis(i, part, 1)
    order = np.lexsort((i, -s), axis=1)
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)


# -- queries from degraded images ---------------------------------------------------------
def prepare_query(
    y: torch.Tensor,
    operator,
    sigma_y: float,
    denoiser: Denoiser = "tv",
    eta: float | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """A presentable estimate of x from y = A x + n (n ~ N(0, sigma_y^2), [0, 1] units).

    1. ``x_1 = A^+_eta y`` with ``eta = sigma_y^2`` by default (regularised pseudo-inverse).
    2. Null-space fill: with ``p = A^+ A 1`` (1 where A keeps a pixel, 0 where it loses it,
       e.g. the mask of an inpainting operator), ``x_2 = p x_1 + (1 - p) G*x_1 / G*p``,
       i.e. lost pixels get the Gaussian-weighted mean of the kept ones (normalised
       convolution, G of width 1/16 of the image side). A no-op when A loses no pixel.
    3. Denoise with the noise std left after A^+, measured by pushing a unit white-noise
       sample through it: ``s = sigma_y std(A^+ n)``. ``"tv"``: Chambolle TV with weight
       ``s``; ``"gaussian"``: a Gaussian filter of width ``s / (2 sqrt(pi) 0.01)`` pixels
       (white noise of std s falls to ~0.01), capped at 4; ``"none"``: skip.

    ``y`` is (B, C', H', W') or (C', H', W'); returns x in [0, 1] with the batch layout of
    ``y``. ``seed`` drives the noise probe of step 3 (a local generator).
    """
    if denoiser not in ("tv", "gaussian", "none"):
        raise ValueError(f"denoiser must be 'tv', 'gaussian' or 'none', got {denoiser!r}")
    if sigma_y < 0:
        raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
    squeeze = y.dim() == 3
    y = (y[None] if squeeze else y).float()
    eta = float(sigma_y) ** 2 if eta is None else float(eta)
    with torch.no_grad():
        x = operator.A_dagger(y, eta)
        p = operator.A_dagger(operator.A(torch.ones_like(x)), eta).clamp(0, 1)
        if float(p.min()) < 0.99:
            x = _fill_null_space(x, p)
        s_eff = 0.0
        if sigma_y > 0 and denoiser != "none":
            g = torch.Generator().manual_seed(seed)
            n = torch.randn(y.shape, generator=g, dtype=y.dtype).to(y.device)
            nd = operator.A_dagger(n, eta)
            kept = p > 0.5
            s_eff = float(sigma_y * (nd[kept].std() if kept.any() else nd.std()))
        x = x.clamp(0, 1)
        if s_eff > 1e-3:
            x = _denoise(x, s_eff, denoiser)
    return x[0] if squeeze else x


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter with reflect padding (radius 3 sigma, < image size)."""
    h, w = x.shape[-2:]
    r = max(1, min(int(math.ceil(3 * sigma)), h - 1, w - 1))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    b, c = x.shape[:2]
    z = x.reshape(b * c, 1, h, w)
    z = torch.nn.functional.pad(z, (r, r, r, r), mode="reflect")
    z = torch.nn.functional.conv2d(z, k.view(1, 1, 1, -1))
    z = torch.nn.functional.conv2d(z, k.view(1, 1, -1, 1))
    return z.reshape(b, c, h, w)


def _fill_null_space(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    sigma = max(1.0, min(x.shape[-2:]) / 16)
    num = _gaussian_blur(x * p, sigma)
    den = _gaussian_blur(p.expand_as(x).contiguous(), sigma)
    fill = num / den.clamp_min(1e-6)
    # where even the wide window saw nothing, fall back to the global mean of kept pixels
    mean = (x * p).sum(dim=(2, 3), keepdim=True) / p.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    fill = torch.where(den > 1e-3, fill, mean.expand_as(x))
    return p * x + (1 - p) * fill


def _denoise(x: torch.Tensor, s: float, denoiser: Denoiser) -> torch.Tensor:
    if denoiser == "gaussian":
        return _gaussian_blur(x, min(4.0, s / (2 * math.sqrt(math.pi) * 0.01))).clamp(0, 1)
    from skimage.restoration import denoise_tv_chambolle

    out = []
    for im in x.detach().cpu().double().numpy():  # (C, H, W)
        d = denoise_tv_chambolle(im, weight=s, channel_axis=0)
        out.append(torch.from_numpy(np.ascontiguousarray(d)))
    return torch.stack(out).to(x.device, x.dtype).clamp(0, 1)


def retrieval_accuracy(
    retrieved_ids: Sequence[Sequence[str]],
    true_ids: Sequence[str | Sequence[str]],
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Fraction of queries whose true source is among the first k retrieved, per k.

    ``true_ids[i]`` is one id or a collection of acceptable ids for query i. Returns
    ``{"top1": ..., "top5": ...}`` (JSON-able); a k larger than the retrieved lists
    counts what was retrieved.
    """
    if len(retrieved_ids) != len(true_ids):
        raise ValueError(f"{len(retrieved_ids)} result lists for {len(true_ids)} queries")
    if not true_ids:
        raise ValueError("no queries")
    out = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        hits = 0
        for got, want in zip(retrieved_ids, true_ids, strict=True):
            want_set = {want} if isinstance(want, str) else set(want)
            hits += bool(want_set & set(got[:k]))
        out[f"top{k}"] = hits / len(true_ids)
    return out
