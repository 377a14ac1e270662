"""LoRA adapters on disk, in peft's layout: ``adapter_config.json`` +
``adapter_model.safetensors`` (keys prefixed ``base_model.model.``), so
``PeftModel.from_pretrained(UNet2DModel.from_pretrained(prior_dir), adapter_dir)`` loads
them; ``base_model_name_or_path`` names the base prior and ``restoreflow_adapter.json``
records its hash, the settings and the adapter's hash. Never loaded from pickles.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path

import torch

from restoreflow.models.lora import (
    adapter_hash,
    adapter_state,
    inject_lora,
    lora_adapted_prior,
    merge_lora,
)
from restoreflow.models.prior import PICKLE_SUFFIXES, DiffusionPrior, ModelLoadError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PROVENANCE = "restoreflow_adapter.json"
# what PeftModel prefixes every key with (older restoreflow adapters lack it; both load)
PEFT_PREFIX = "base_model.model."


def _peft_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as ``PeftModel.from_pretrained`` expects them (``base_model.model.`` + name)."""
    return {k if k.startswith(PEFT_PREFIX) else PEFT_PREFIX + k: v for k, v in state.items()}


def _module_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys relative to the UNet (the layout of the injected model; old adapters)."""
    return {k.removeprefix(PEFT_PREFIX): v for k, v in state.items()}


def save_adapter(prior: DiffusionPrior, directory: str | Path) -> Path:
    """Write the adapter of an adapted prior in peft's layout (safetensors, no pickle).

    Files: ``adapter_model.safetensors`` (keys ``base_model.model.<module>.lora_A.weight``
    as peft saves them), ``adapter_config.json`` (``base_model_name_or_path``: the base
    prior's directory or hub id) and ``restoreflow_adapter.json`` (base prior hash and
    location, settings, adapter hash). ``PeftModel.from_pretrained(UNet2DModel.
    from_pretrained(prior_dir), directory)`` then gives the adapted UNet. The directory
    is written under a temporary name and renamed, so a reader never sees a partial
    adapter; if another writer got there first, its (identical) adapter is kept.
    """
    from safetensors.torch import save_file

    info = prior.extra.get("lora")
    if info is None or not hasattr(prior.unet, "peft_config"):
        raise ValueError("this prior carries no LoRA adapter (use adapt_prior first)")
    directory = Path(directory)
    if (directory / ADAPTER_WEIGHTS).is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    tmp.mkdir()
    try:
        state = _peft_keys(adapter_state(prior.unet))
        save_file(state, tmp / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        config = copy.copy(prior.unet.peft_config["default"])
        config.base_model_name_or_path = info.get("base_model")
        config.save_pretrained(str(tmp))
        keep = {k: v for k, v in info.items() if k != "losses"}
        keep["final_loss"] = info["losses"][-1] if info.get("losses") else None
        (tmp / PROVENANCE).write_text(json.dumps(keep, indent=2, sort_keys=True) + "\n")
        try:
            tmp.rename(directory)
        except OSError:
            if not (directory / ADAPTER_WEIGHTS).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return directory


def load_adapter(prior: DiffusionPrior, directory: str | Path) -> DiffusionPrior:
    """A copy of ``prior`` with the adapter saved in ``directory`` (safetensors only).

    Refuses a directory whose weights are only pickled (``adapter_model.bin``), and an
    adapter recorded as trained on a different base prior. Reads peft's key layout and
    the unprefixed one of adapters saved by earlier versions.
    """
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: no such adapter directory")
    weights = directory / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickled = [p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
        reason = (
            f"only pickled weights ({', '.join(sorted(pickled))}); refusing to unpickle"
            if pickled
            else f"no {ADAPTER_WEIGHTS}"
        )
        raise ModelLoadError(f"{directory}: {reason}")
    if not (directory / ADAPTER_CONFIG).is_file():
        raise ModelLoadError(f"{directory}: no {ADAPTER_CONFIG}")
    if hasattr(prior.unet, "peft_config"):
        raise ValueError("the prior already carries an adapter; load onto the base prior")
    info: dict = {}
    if (directory / PROVENANCE).is_file():
        info = json.loads((directory / PROVENANCE).read_text())
    base = info.get("base_hash")
    unsaved = ("unsaved", None)
    if base not in unsaved and prior.model_hash not in unsaved and base != prior.model_hash:
        raise ModelLoadError(
            f"{directory}: adapter trained on prior {base[:12]}, not {prior.model_hash[:12]}"
        )
    config = LoraConfig.from_pretrained(str(directory))
    state = _module_keys(load_file(weights))
    unet = copy.deepcopy(prior.unet).eval().requires_grad_(False)
    inject_lora(unet, config)
    result = set_peft_model_state_dict(unet, state)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        raise ModelLoadError(
            f"{directory}: adapter does not fit this prior "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    unet.requires_grad_(False)
    merge_lora(unet)
    info = {**info, "adapter_hash": adapter_hash(adapter_state(unet)), "source": str(directory)}
    return lora_adapted_prior(prior, unet, info)
