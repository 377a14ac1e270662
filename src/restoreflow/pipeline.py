"""Per-image stages of the pipeline on a store: retrieve -> adapt -> restore -> score.

Plain functions, callable and testable without Prefect; ``tasks/`` wraps them and
``flows/`` wires them. The storage rule of the store applies: the driver (flow) process
creates images and writes attrs and tables (``prepare_*`` / ``finish_*``); the worker
functions (``restore_stored``, ``write_intervals``) only write chunk-aligned regions and
small files under unique keys, and return small dicts.

Outputs are keyed by content: a restored image records the hash of the settings that
made it (degradation, sampler, steps, options, tiling, prior hash, adaptation), so a
rerun skips what is complete and equal, and recomputes what is missing or different.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from restoreflow.spec import DegradationSpec, RunSpec, make_generator, seed_for
from restoreflow.storage.store import TileStore

INPUT, DEGRADED, RESTORED = "input", "degraded", "restored"
INTERVAL_LO, INTERVAL_HI = "interval_lower", "interval_upper"
LAMBDA_GRID = np.round(np.linspace(0.0, 1.0, 201), 6)  # pixel values lie in [0, 1]


# RestoreConfig field -> LoraSettings field
_LORA_FIELDS = {"adapt_steps": "steps", "adapt_rank": "rank", "adapt_alpha": "alpha",
                "adapt_lr": "lr", "adapt_targets": "target_modules", "adapt_max_t": "max_t"}
# left out of the settings hash as fields (they are in its "lora" entry), so the hashes of
# configurations from before these fields existed stay the same
_LORA_FIELDS_NOT_HASHED = ("adapt_alpha", "adapt_lr", "adapt_targets", "adapt_max_t")


@dataclass(frozen=True)
class RestoreConfig:
    """Everything that determines a restoration (and what a calibration certifies)."""

    degradation: str
    seed: int = 0
    sampler: str = "ddpg"
    steps: int = 100
    options: tuple[tuple[str, float | int | str | bool], ...] = ()
    tile: int = 256
    overlap: int = 64
    tile_batch: int = 4
    posterior_samples: int = 1
    prior: str | None = None
    adapt: bool = False
    neighbours: int = 8
    adapt_steps: int | None = None
    adapt_rank: int | None = None
    adapt_alpha: float | None = None
    adapt_lr: float | None = None
    adapt_targets: tuple[str, ...] | None = None
    adapt_max_t: int | None = None
    embedder: str = "efficientnet-lite0"
    index: str = "default"
    lower_q: float = 0.05
    upper_q: float = 0.95

    @classmethod
    def from_run(cls, spec: RunSpec) -> RestoreConfig:
        r, a = spec.restore, spec.adapt
        return cls(
            degradation=spec.degradation, seed=spec.seed, sampler=r.sampler, steps=r.steps,
            options=tuple(sorted(r.options.items())), tile=r.tile, overlap=r.overlap,
            tile_batch=r.tile_batch, posterior_samples=r.posterior_samples,
            prior=chosen_prior(spec.prior),
            adapt=a.enabled, neighbours=a.neighbours, adapt_steps=a.steps, adapt_rank=a.rank,
            adapt_alpha=a.alpha, adapt_lr=a.lr,
            adapt_targets=tuple(a.targets) if a.targets else None, adapt_max_t=a.max_t,
            embedder=a.embedder,
        )

    @property
    def spec(self) -> DegradationSpec:
        return DegradationSpec.parse(self.degradation)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["options"] = dict(self.options)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RestoreConfig:
        targets = d.get("adapt_targets")
        return cls(**{**d, "options": tuple(sorted(dict(d.get("options") or {}).items())),
                      "adapt_targets": tuple(targets) if targets else None})

    def lora_settings(self):
        from restoreflow.models.lora import LoraSettings

        over = {name: getattr(self, field) for field, name in _LORA_FIELDS.items()
                if getattr(self, field) is not None}
        return LoraSettings(seed=self.seed, **over)

    def settings_hash(self, prior_hash: str) -> str:
        """What a calibration certifies: everything but the seed and the tile batch."""
        d = asdict(self)
        for k in ("seed", "tile_batch", "prior", *_LORA_FIELDS_NOT_HASHED):  # in d["lora"]
            d.pop(k)
        d["degradation"] = self.spec.text
        d["prior_hash"] = prior_hash
        if self.adapt:
            d["lora"] = self.lora_settings().to_dict() | {"seed": None}
        else:
            for k in ("neighbours", "adapt_steps", "adapt_rank", "embedder", "index"):
                d.pop(k)
        text = json.dumps(d, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- models, cached per worker process ------------------------------------------------

_PRIORS: dict = {}
# One model job at a time per process: a device runs one model task at a time (Dask
# resources ensure it across workers; this covers thread-pool task runners), and peft's
# adapter injection is not thread-safe.
MODEL_LOCK = threading.RLock()


def chosen_prior(ref: str | None) -> str | None:
    """The prior a job uses, chosen once on the driver: the run spec's or ``--prior``'s
    reference, else the ``RESTOREFLOW_PRIOR`` setting, else None (the shipped prior).
    Workers receive the choice inside the config, never re-read their environment."""
    from restoreflow.settings import get_settings

    return ref or get_settings().prior or None


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


# ---- shapes and operators ----------------------------------------------------------------


def x_shape(store: TileStore, image_id: str, y_collection: str, spec: DegradationSpec):
    """(C, H, W) of the unknown image x: the input's shape for simulated y; for measured
    y (``y_collection == "input"``) the shape that A maps onto y's grid."""
    if y_collection != INPUT:
        return store.shape(INPUT, image_id)
    op = spec.operator
    return op.entry.x_shape(op.params_dict, store.shape(INPUT, image_id))


def rgb_measurement(y: torch.Tensor, spec: DegradationSpec) -> torch.Tensor:
    """A grey y as three equal channels when x is grey too (the RGB prior restores it as
    a grey RGB image); y of an operator that maps RGB to grey (colorise) unchanged."""
    op = spec.operator
    if y.shape[0] == 1 and op.entry.x_shape(op.params_dict, tuple(y.shape))[0] == 1:
        return y.expand(3, -1, -1)
    return y


def build_operator(spec: DegradationSpec, shape, image_id: str, seed: int, channels: int = 3):
    """The degradation of this image as simulate built it (same generator), built for the
    prior's channels (a grey image is restored as a grey RGB image)."""
    c, h, w = shape
    return spec.build((max(c, channels), h, w), generator=make_generator(spec, seed, image_id))


# ---- retrieval and adaptation ---------------------------------------------------------


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


def build_index(store: TileStore, image_ids: list[str], name: str = "default",
                embedder: str = "efficientnet-lite0", device: str = "cpu",
                progress=None) -> dict:
    """Embed the images not yet in index ``name`` and save it (incremental)."""
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
        index.add(embed_images(emb, imgs).cpu().numpy(), chunk)
        if progress:
            progress(min(k + 8, len(todo)), len(todo))
    if todo:
        save_index(store, index, name)
    return {"index": name, "added": len(todo), "size": len(index.ids),
            "embedder": emb.name, "weights_hash": emb.weights_hash}


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
    from restoreflow.models.lora import adapt_prior, adapter_key, load_adapter, save_adapter

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


# ---- restore ----------------------------------------------------------------------------


def _restore_attrs(cfg: RestoreConfig, shash: str) -> dict:
    return {"collection_attrs": {"settings_hash": shash, "degradation": cfg.spec.text,
                                 "sampler": cfg.sampler, "steps": cfg.steps, "seed": cfg.seed}}


def restore_outputs(cfg: RestoreConfig, out: str = RESTORED) -> list[str]:
    """The restoration (posterior mean) and, for J >= 2 samples, the per-pixel sample
    quantiles ``<out>.samples_lower`` / ``<out>.samples_upper``."""
    if cfg.posterior_samples < 2:
        return [out]
    return [out, f"{out}.samples_lower", f"{out}.samples_upper"]


def is_restored(store: TileStore, image_id: str, shash: str, out: str = RESTORED) -> bool:
    if not store.has(out, image_id):
        return False
    return store.attrs(out, image_id).get("collection_attrs", {}).get("settings_hash") == shash


def prepare_restore(store: TileStore, image_id: str, cfg: RestoreConfig, shash: str,
                    y_collection: str, out: str = RESTORED) -> bool:
    """Driver: create the output images (metadata only). False if already done."""
    if is_restored(store, image_id, shash, out):
        return False
    shape = x_shape(store, image_id, y_collection, cfg.spec)
    for coll in restore_outputs(cfg, out):
        store.create_image(coll, image_id, shape, np.float32, attrs=_restore_attrs(cfg, shash),
                           overwrite=True)
    return True


def restore_stored(store: TileStore, image_id: str, cfg: RestoreConfig, y_collection: str,
                   out: str = RESTORED, device: str = "cpu", progress=None) -> dict:
    """Worker: retrieve -> adapt -> restore one image; write its tiles; return features."""
    with MODEL_LOCK:
        return _restore_stored(store, image_id, cfg, y_collection, out, device, progress)


def _restore_stored(store, image_id, cfg, y_collection, out, device, progress) -> dict:
    from restoreflow.quality.features import compute_features
    from restoreflow.quality.rcps import base_intervals
    from restoreflow.restore import restore_image

    timings: dict[str, float] = {}
    spec = cfg.spec
    t0 = time.perf_counter()
    y = torch.from_numpy(store.read(y_collection, image_id, normalised=True))
    shape = x_shape(store, image_id, y_collection, spec)
    deg = build_operator(spec, shape, image_id, cfg.seed)
    prior = load_prior(cfg.prior, device)
    info: dict = {"prior_hash": prior.model_hash, "device": device}
    y3 = rgb_measurement(y, spec)
    if cfg.adapt:
        nbrs = retrieve_neighbours(store, image_id, y3, deg, cfg.neighbours, cfg.index,
                                   cfg.embedder, device)
        timings["retrieve"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        prior, key, cached = adapted_prior(store, prior, image_id, [n for n, _ in nbrs], cfg,
                                           device)
        timings["adapt"] = time.perf_counter() - t1
        info.update(neighbours=[{"id": n, "score": s} for n, s in nbrs], adapter=key,
                    adapter_cached=cached)
    t2 = time.perf_counter()
    g = torch.Generator().manual_seed(seed_for(spec.hash, cfg.seed, f"{image_id}/restore"))
    # y goes in as a loader, not a tensor: restore_image frees it once it has its
    # model-units copy (one image-sized buffer less at the peak); read again for features
    del y, y3
    samples = restore_image(
        prior, deg.operator,
        lambda: torch.from_numpy(store.read(y_collection, image_id, normalised=True)),
        deg.sigma_y, sampler=cfg.sampler, steps=cfg.steps, generator=g,
        num_samples=cfg.posterior_samples, tile=cfg.tile, overlap=cfg.overlap,
        tile_batch=cfg.tile_batch, options=dict(cfg.options), progress=progress,
    )
    timings["restore"] = time.perf_counter() - t2
    x_hat = samples[0] if samples.shape[0] == 1 else samples.mean(0)
    outs = restore_outputs(cfg, out)
    store.write_image(outs[0], image_id, np.asarray(x_hat.numpy(), dtype=np.float32))
    if cfg.posterior_samples >= 2:
        lo, hi = base_intervals(samples.numpy(), cfg.lower_q, cfg.upper_q)
        store.write_image(outs[1], image_id, lo.astype(np.float32))
        store.write_image(outs[2], image_id, hi.astype(np.float32))
    op3 = deg.operator
    y = torch.from_numpy(store.read(y_collection, image_id, normalised=True))
    y3 = rgb_measurement(y, spec)
    xin = x_hat.expand(3, -1, -1) if x_hat.shape[0] == 1 else x_hat
    feats = compute_features(op3, xin, y3, max(deg.sigma_y, 1e-3),
                             samples=samples if cfg.posterior_samples >= 2 else None)
    return {"image_id": image_id, "features": feats, "timings": timings, **info}


def finish_restore(store: TileStore, image_id: str, cfg: RestoreConfig, result: dict,
                   out: str = RESTORED) -> None:
    """Driver: record features and provenance, mark the outputs complete."""
    extra = {k: v for k, v in result.items() if k != "image_id"}
    for coll in restore_outputs(cfg, out)[1:]:
        store.mark_complete(coll, image_id)
    store.mark_complete(out, image_id, **extra)


def restore_one(store: TileStore, image_id: str, cfg: RestoreConfig, y_collection: str,
                out: str = RESTORED, device: str = "cpu") -> dict | None:
    """prepare -> restore -> finish in one process (tests, calibration without a cluster)."""
    shash = cfg.settings_hash(prior_hash(cfg.prior))
    if not prepare_restore(store, image_id, cfg, shash, y_collection, out):
        return None
    res = restore_stored(store, image_id, cfg, y_collection, out, device)
    finish_restore(store, image_id, cfg, res, out)
    return res


# ---- calibration and scoring ----------------------------------------------------------


def truth_metrics(store: TileStore, image_id: str, out: str = RESTORED) -> dict:
    from restoreflow.quality.metrics import psnr, ssim

    x = store.read(INPUT, image_id, normalised=True)
    x_hat = store.read(out, image_id)
    return {"psnr_true": psnr(x_hat, np.clip(x, 0, 1)), "ssim_true": ssim(x_hat, np.clip(x, 0, 1))}


def feature_names(posterior_samples: int) -> list[str]:
    names = ["measurement_consistency", "grad_mean_xhat", "hf_energy_xhat",
             "grad_mean_ydagger", "hf_energy_ydagger", "noise_sigma_y"]
    if posterior_samples >= 2:
        names += ["pixel_std_mean", "pairwise_psnr_mean"]
    return names


@dataclass
class Calibration:
    settings_hash: str
    alpha: float
    psnr: dict
    ssim: dict
    pixel: dict | None
    rows: list[dict] = field(default_factory=list)
    coverage: dict = field(default_factory=dict)
    trivial: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self) | {"n": len(self.rows)}


def fit_calibration(store: TileStore, rows: list[dict], cfg: RestoreConfig, shash: str,
                    alpha: float, method: str = "residual", pixel_epsilon: float = 0.1,
                    pixel_delta: float = 0.1, out: str = RESTORED) -> Calibration:
    """Fit conformal lower bounds on PSNR and SSIM (and the per-pixel lambda) from the
    calibration rows ``{image_id, psnr_true, ssim_true, features}``."""
    from restoreflow.quality.conformal import ConformalLowerBound, TrivialLowerBound
    from restoreflow.quality.features import feature_vector
    from restoreflow.quality.rcps import Intervals, RiskControlError, calibrate_lambda, excess

    names = feature_names(cfg.posterior_samples)
    X = np.stack([feature_vector(r["features"], names) for r in rows])
    models, trivial, coverage = {}, {}, {}
    for target in ("psnr", "ssim"):
        v = np.array([r[f"{target}_true"] for r in rows])
        rng = np.random.default_rng(seed_for(shash, cfg.seed, f"calibration/{target}"))
        m = ConformalLowerBound.fit(X, v, alpha, rng, method=method, feature_names=names,
                                    target=target, settings_hash=shash)
        models[target] = m
        trivial[target] = TrivialLowerBound.fit(v, alpha, target, shash).to_dict()
        b = m.bound(X)
        for r, bi in zip(rows, b, strict=True):
            r[f"{target}_bound"] = float(bi)
        coverage[target] = float(np.mean(v >= b))
    pixel = None
    if cfg.posterior_samples < 2:
        pixel_note = "no per-pixel intervals: restore with posterior_samples >= 2"
    else:
        losses = []
        for r in rows:
            iid = r["image_id"]
            lo_c, hi_c = restore_outputs(cfg, out)[1:]
            e = excess(Intervals(store.read(lo_c, iid), store.read(hi_c, iid)),
                       np.clip(store.read(INPUT, iid, normalised=True), 0, 1))
            losses.append([(e > lam).mean() for lam in LAMBDA_GRID])
        try:
            lam = calibrate_lambda(np.array(losses), LAMBDA_GRID, pixel_epsilon, pixel_delta)
            pixel = {"lam": float(lam), "epsilon": pixel_epsilon, "delta": pixel_delta,
                     "lower_q": cfg.lower_q, "upper_q": cfg.upper_q, "n": len(rows)}
            pixel_note = None
        except RiskControlError as exc:
            pixel_note = f"no per-pixel intervals: {exc}"
    coverage["pixel_note"] = pixel_note
    return Calibration(shash, alpha, models["psnr"].to_dict(), models["ssim"].to_dict(), pixel,
                       rows, coverage, trivial)


def calibration_path(shash: str) -> str:
    return f"calibrations/{shash}.json"


def save_calibration(store: TileStore, cal: Calibration) -> None:
    store.put_bytes(calibration_path(cal.settings_hash),
                    json.dumps(cal.to_dict(), indent=1).encode())


def load_calibration(store: TileStore, shash: str) -> dict | None:
    p = calibration_path(shash)
    return json.loads(store.get_bytes(p)) if store.exists(p) else None


def score(features: dict, calibration: dict | None, shash: str,
          min_psnr: float | None = None) -> dict:
    """Conformal lower bounds for one image; no bound (and a warning) when the
    calibration was made with other settings."""
    from restoreflow.quality.conformal import calibration_from_dict

    if calibration is None:
        return {"psnr_lower": None, "ssim_lower": None, "alpha": None, "flagged": False,
                "warning": "not calibrated: no bound"}
    if calibration["settings_hash"] != shash:
        return {"psnr_lower": None, "ssim_lower": None, "alpha": calibration["alpha"],
                "flagged": False,
                "warning": f"calibration {calibration['settings_hash']} was made with other "
                           f"restore settings than {shash}: no bound"}
    p = calibration_from_dict(calibration["psnr"]).bound_features(features)
    s = calibration_from_dict(calibration["ssim"]).bound_features(features)
    flagged = bool(min_psnr is not None and not p >= min_psnr)
    lam = calibration["pixel"]["lam"] if calibration.get("pixel") else None
    return {"psnr_lower": p, "ssim_lower": s, "alpha": calibration["alpha"], "flagged": flagged,
            "lambda": lam, "warning": None}


def prepare_intervals(store: TileStore, image_id: str, lam: float) -> None:
    """Driver: create the calibrated per-pixel interval images."""
    shape = store.shape(RESTORED, image_id)
    for coll in (INTERVAL_LO, INTERVAL_HI):
        store.create_image(coll, image_id, shape, np.float32,
                           attrs={"collection_attrs": {"lambda": lam}}, overwrite=True)


def write_intervals(store: TileStore, image_id: str, lam: float) -> None:
    """Worker: [l - lambda, u + lambda] tile by tile (RCPS-calibrated pixel intervals)."""
    for _, _, y0, y1, x0, x1 in store.tiles(RESTORED, image_id):
        lo = store.read_region(f"{RESTORED}.samples_lower", image_id, y0, y1, x0, x1)
        hi = store.read_region(f"{RESTORED}.samples_upper", image_id, y0, y1, x0, x1)
        store.write_region(INTERVAL_LO, image_id, lo - lam, y0, x0)
        store.write_region(INTERVAL_HI, image_id, hi + lam, y0, x0)
