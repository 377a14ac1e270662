"""The restore stage: one image restored with a guided diffusion sampler, tile by tile.

:func:`restore_image` is the tensor-level runner; :func:`prepare_restore` (driver),
:func:`restore_stored` (worker: retrieve -> adapt -> restore, tiles written, features
returned) and :func:`finish_restore` (driver) run it on stored images.

Units. Callers work in [0, 1]: ``y = A x + n`` with x in [0, 1] and n ~ N(0, sigma_y^2).
The prior works in model space [-1, 1] (``x_m = 2 x - 1``), so by linearity of A

    y_m = 2 y - A 1 = A x_m + 2 n,      sigma_m = 2 sigma_y,

and the samplers receive ``(y_m, sigma_m)``. The output is mapped back with
``x = (x_m + 1) / 2`` and clamped to [0, 1].

Large images. The prior is wrapped in :class:`~restoreflow.models.tiled.TiledPrior`: the
UNet runs on overlapping tiles (``tile``, ``overlap``, ``tile_batch``) blended into one
image-sized eps, while the guidance (A, A^T, A^+) acts on the whole image. An image no
larger than one tile is evaluated in one piece (padded to the UNet's size multiple).
Memory: DDPG holds three image-sized tensors (x_t, x0, y in model
units) plus, for channel-wise operators, the scratch of one channel. ``y`` may be given
as a loader (a function returning it): the [0, 1] tensor is then freed as soon as its
model-units copy exists (a tensor argument stays referenced by the caller).

Greyscale. The operator is built for the prior's channels (3 for an RGB prior). A 1-channel
``y`` whose ``A^T y`` has 1 channel (blur, SR, masks act per channel) is replicated to 3
channels, restored as a grey RGB image and the output averaged back to 1 channel. A
1-channel ``y`` for a colourisation operator (``A^T y`` has 3 channels) is kept as it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from restoreflow.compat import legacy_settings_hashes
from restoreflow.degradation import DegradationSpec, make_generator, seed_for
from restoreflow.samplers import get_sampler, resolve_options
from restoreflow.samplers.schedule import Progress
from restoreflow.spec import RestoreOptions
from restoreflow.stages.adapt import adapted_prior, retrieve_neighbours
from restoreflow.stages.config import RestoreConfig
from restoreflow.stages.models import MODEL_LOCK, load_prior, prior_hash
from restoreflow.storage.layout import INPUT, RESTORED, STATUS_COMPLETE
from restoreflow.storage.store import TileStore


def task_kind(operator) -> str:
    """The task kind an operator declares (its ``task`` attribute); "other" without one."""
    return getattr(operator, "task", "other")


def _prior_channels(prior) -> int:
    unet = getattr(prior, "unet", None)
    cfg = getattr(unet, "config", None)
    return int(getattr(cfg, "in_channels", 3))


def restore_image(
    prior,
    operator,
    y: torch.Tensor,
    sigma_y: float,
    settings: RestoreOptions | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Restore one degraded image; returns (J, C, H, W) in [0, 1] (clamped), J =
    ``settings.posterior_samples``.

    Args:
        prior: a DiffusionPrior (or TiledPrior; it is then used as it is).
        operator: LinearOperator A built for the prior's channel count (see module doc).
        y: measurements (C', H', W') in [0, 1] units, ``y = A x + n``, or a function
            returning them (see the module docstring: memory).
        sigma_y: std of n in [0, 1] units (0 = noiseless).
        settings: the validated restore settings (sampler, steps, options, tiling,
            posterior samples); None: the default solver of the operator's task
            (:meth:`RestoreOptions.for_task`). The options run are
            :func:`restoreflow.samplers.resolve_options` of the operator's task kind.
        generator: the only source of randomness; None = ``torch.Generator().manual_seed(0)``
            on the CPU (reproducible by default).
        progress: optional callback(step_number, total).
    """
    from restoreflow.models.tiled import TiledPrior

    task = task_kind(operator)
    r = settings if settings is not None else RestoreOptions.for_task(task)
    sample = get_sampler(r.sampler)
    if not callable(y) and y.dim() != 3:
        raise ValueError(f"y must be one image (C, H, W), got shape {tuple(y.shape)}")
    if not (math.isfinite(sigma_y) and sigma_y >= 0):
        raise ValueError(f"sigma_y must be finite and >= 0, got {sigma_y}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    opts = resolve_options(r.sampler, task, sigma_y, r.options)

    from restoreflow.operators.base import x_shape_of

    device = prior.device
    if callable(y):  # a loader: then nothing outside holds y, and it is freed below
        y = y()
        if not isinstance(y, torch.Tensor) or y.dim() != 3:
            raise ValueError("the y loader must return one image tensor (C, H, W)")
    y = y.to(device=device, dtype=torch.float64 if y.dtype == torch.float64 else torch.float32)
    yb = y[None]
    del y  # a caller that passes y without keeping it frees it as soon as y_m exists
    grey = yb.shape[1] == 1 and x_shape_of(operator, yb)[1] == 1 and _prior_channels(prior) == 3
    if grey:
        yb = yb.expand(-1, 3, -1, -1).contiguous()
    shape_x = x_shape_of(operator, yb)
    # model units: A (2x - 1) + 2n = 2y - A 1 (A 1 on one channel for channel-wise A)
    ones_shape = (1, 1, *shape_x[2:]) if getattr(operator, "channelwise", False) else shape_x
    a1 = operator.A(torch.ones(ones_shape, device=device, dtype=yb.dtype))
    y_m = (2.0 * yb).sub_(a1)
    del yb, a1
    sigma_m = 2.0 * float(sigma_y)

    if not isinstance(prior, TiledPrior):
        prior = TiledPrior(prior, tile=r.tile, overlap=min(r.overlap, r.tile - 1),
                           batch=r.tile_batch)
    x_m = sample(
        prior,
        operator,
        y_m,
        sigma_m,
        r.steps,
        generator,
        num_samples=r.posterior_samples,
        progress=progress,
        **opts,
    )
    del y_m
    x = x_m.add_(1.0).div_(2.0).clamp_(0.0, 1.0)
    if grey:
        x = x.mean(dim=1, keepdim=True)
    return x


# ---- stored images: shapes and operators -------------------------------------------


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


# ---- stored images: driver and worker halves -------------------------------------------


def _restore_attrs(cfg: RestoreConfig, shash: str) -> dict:
    return {"collection_attrs": {"settings_hash": shash, "degradation": cfg.spec.text,
                                 "sampler": cfg.restore.sampler, "steps": cfg.restore.steps,
                                 "seed": cfg.seed}}


def restore_outputs(cfg: RestoreConfig, out: str = RESTORED) -> list[str]:
    """The restoration (posterior mean) and, for J >= 2 samples, the per-pixel sample
    quantiles ``<out>.samples_lower`` / ``<out>.samples_upper``."""
    if cfg.restore.posterior_samples < 2:
        return [out]
    return [out, f"{out}.samples_lower", f"{out}.samples_upper"]


def _stored_settings(store: TileStore, image_id: str, out: str) -> tuple[bool, str | None]:
    """(complete, settings hash) of what ``out`` holds of the image, from one read of its
    attrs ((False, None) when there is none)."""
    try:
        attrs = store.attrs(out, image_id)
    except KeyError:
        return False, None
    return (attrs.get("status") == STATUS_COMPLETE,
            attrs.get("collection_attrs", {}).get("settings_hash"))


def is_restored(store: TileStore, image_id: str, shash: str, out: str = RESTORED,
                legacy: Sequence[str] = ()) -> bool:
    """Whether ``out`` holds this image restored with settings hash ``shash`` (or one of
    the ``legacy`` hashes older versions gave the same settings)."""
    complete, stored = _stored_settings(store, image_id, out)
    return complete and (stored == shash or stored in legacy)


def restored_otherwise(store: TileStore, image_ids: Sequence[str], key: SettingsKey,
                       out: str = RESTORED) -> list[str]:
    """The images of ``image_ids`` that ``out`` holds complete but restored with other
    settings than ``key``'s: restoring them with ``key``'s replaces those restorations."""
    out_ids = []
    for i in image_ids:
        complete, stored = _stored_settings(store, i, out)
        if complete and stored != key.current and stored not in key.legacy:
            out_ids.append(i)
    return out_ids


@dataclass(frozen=True)
class SettingsKey:
    """What keys a restoration in the store: the prior's content hash, the settings hash
    and the hashes older versions gave the same settings."""

    prior: str
    current: str
    legacy: tuple[str, ...]


def settings_key(cfg: RestoreConfig) -> SettingsKey:
    """The key of ``cfg``'s restorations (reads the prior's content hash)."""
    ph = prior_hash(cfg.prior)
    return SettingsKey(ph, cfg.settings_hash(ph), tuple(legacy_settings_hashes(cfg, ph)))


def tile_count(shape: tuple[int, ...], tile: int) -> int:
    """Tiles of edge ``tile`` covering an image of ``shape`` (C, H, W): the unit a
    restoration's cost grows with."""
    return math.ceil(shape[-2] / tile) * math.ceil(shape[-1] / tile)


def prepare_restore(store: TileStore, image_id: str, cfg: RestoreConfig, key: SettingsKey,
                    y_collection: str, out: str = RESTORED) -> bool:
    """Driver: create the output images (metadata only). False if already done."""
    shash = key.current
    if is_restored(store, image_id, shash, out, key.legacy):
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

    timings: dict[str, float] = {}
    spec = cfg.spec
    t0 = time.perf_counter()
    y = torch.from_numpy(store.read(y_collection, image_id, normalised=True))
    shape = x_shape(store, image_id, y_collection, spec)
    deg = build_operator(spec, shape, image_id, cfg.seed)
    prior = load_prior(cfg.prior, device)
    info: dict = {"prior_hash": prior.model_hash, "device": device}
    y3 = rgb_measurement(y, spec)
    r = cfg.restore
    if cfg.adapt.enabled:
        nbrs = retrieve_neighbours(store, image_id, y3, deg, cfg.adapt.neighbours,
                                   cfg.retrieval_index, cfg.adapt.embedder, device)
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
        deg.sigma_y, r, generator=g, progress=progress,
    )
    timings["restore"] = time.perf_counter() - t2
    x_hat = samples[0] if samples.shape[0] == 1 else samples.mean(0)
    outs = restore_outputs(cfg, out)
    store.write_image(outs[0], image_id, np.asarray(x_hat.numpy(), dtype=np.float32))
    if r.posterior_samples >= 2:
        lo, hi = base_intervals(samples.numpy(), cfg.lower_q, cfg.upper_q)
        store.write_image(outs[1], image_id, lo.astype(np.float32))
        store.write_image(outs[2], image_id, hi.astype(np.float32))
    op3 = deg.operator
    y = torch.from_numpy(store.read(y_collection, image_id, normalised=True))
    y3 = rgb_measurement(y, spec)
    xin = x_hat.expand(3, -1, -1) if x_hat.shape[0] == 1 else x_hat
    feats = compute_features(op3, xin, y3, max(deg.sigma_y, 1e-3),
                             samples=samples if r.posterior_samples >= 2 else None)
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
    if not prepare_restore(store, image_id, cfg, settings_key(cfg), y_collection, out):
        return None
    res = restore_stored(store, image_id, cfg, y_collection, out, device)
    finish_restore(store, image_id, cfg, res, out)
    return res
