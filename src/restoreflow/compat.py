"""Reading what older versions wrote: every legacy form in one place.

Manifests.
A manifest records the run spec as given (``spec``), the settings it resolved
(``restore_config``) and the hash of the prior it used (``prior_hash``). Before the
denoiser prior, a spec without ``prior:`` meant the shipped diffusion UNet; it now means
FFDNet. :func:`spec_of_manifest` gives the spec to rerun: the prior named explicitly
(the spec's, else the resolved settings'), else ``unet`` when the recorded hash is the
shipped UNet's, so an old manifest reruns with the prior it was made with.

Restore settings. Older manifests hold ``restore_config`` in a flat form (``sampler=``,
``adapt=True``, ``adapt_steps=``...; :func:`from_flat`). Sampler options were hashed as
written until they were stored canonical: a float option written with a decimal point
(``zeta_prime: 20.0``) hashed otherwise than ``20``; :func:`legacy_settings_hashes` gives
those hashes, so stored restorations and calibrations keep being found.
"""

from __future__ import annotations

from typing import Any


def spec_of_manifest(manifest: dict) -> dict:
    """The run spec of a manifest, with the prior it was run with made explicit."""
    spec = dict(manifest["spec"])
    if spec.get("prior"):
        return spec
    chosen = (manifest.get("restore_config") or {}).get("prior")
    if chosen:
        return {**spec, "prior": chosen}
    recorded = manifest.get("prior_hash")
    if recorded:
        from restoreflow.models import priors

        for name in ("unet", priors.DEFAULT_PRIOR):
            if priors.prior_hash(name) == recorded:
                return {**spec, "prior": name}
    return spec


# The flat form of RestoreConfig (older manifests' "restore_config"; the settings hash
# is still computed from these names): flat name -> (section, name in that section)
_FLAT = {
    "sampler": ("restore", "sampler"), "steps": ("restore", "steps"),
    "options": ("restore", "options"), "tile": ("restore", "tile"),
    "overlap": ("restore", "overlap"), "tile_batch": ("restore", "tile_batch"),
    "posterior_samples": ("restore", "posterior_samples"),
    "adapt": ("adapt", "enabled"), "neighbours": ("adapt", "neighbours"),
    "embedder": ("adapt", "embedder"), "adapt_steps": ("adapt", "steps"),
    "adapt_rank": ("adapt", "rank"), "adapt_alpha": ("adapt", "alpha"),
    "adapt_lr": ("adapt", "lr"), "adapt_targets": ("adapt", "targets"),
    "adapt_max_t": ("adapt", "max_t"), "match_degradation": ("adapt", "match_degradation"),
}


def from_flat(data: Any) -> Any:
    """RestoreConfig's raw fields with the flat form (``sampler=``, ``adapt=True``,
    ``adapt_steps=``...) moved into its ``restore`` and ``adapt`` sections; other input
    unchanged."""
    from pydantic import BaseModel

    if not isinstance(data, dict):
        return data
    flat = [k for k in data if k in _FLAT and not (k == "adapt" and isinstance(
        data[k], (dict, BaseModel)))]
    if not flat:
        return data
    out = {k: v for k, v in data.items() if k not in flat}
    for section in ("restore", "adapt"):
        if section in out and any(_FLAT[k][0] == section for k in flat):
            raise ValueError(f"give {section} settings either as {section}=... or as "
                             f"flat fields ({', '.join(flat)}), not both")
    sections: dict[str, dict] = {"restore": {}, "adapt": {}}
    for k in flat:
        section, name = _FLAT[k]
        v = data[k]
        if k == "options" and v is not None and not isinstance(v, dict):
            v = dict(v)  # the old tuple of (name, value) pairs
        if v is not None:
            sections[section][name] = v
    # the flat form predates the denoiser prior: its defaults were DDPG, 100 steps
    sections["restore"].setdefault("sampler", "ddpg")
    sections["restore"].setdefault("steps", 100)
    if sections["adapt"].get("enabled") and "match_degradation" not in data:
        # the flat form's adaptation retrieved from the clean corpus
        sections["adapt"]["match_degradation"] = False
    return {**out, **{s: d for s, d in sections.items() if d}}


def legacy_settings_hashes(cfg, prior_hash: str) -> list[str]:
    """The settings hashes older versions gave ``cfg`` (a RestoreConfig) when they differ
    from today's: its sampler options as their typed values (``20.0``), as they were
    hashed when written so."""
    from restoreflow.samplers import options_model

    opts = cfg.restore.options
    typed = options_model(cfg.restore.sampler)(**opts)
    spelled = {k: getattr(typed, k) for k in opts}
    if all(type(spelled[k]) is type(v) for k, v in opts.items()):
        return []
    return [cfg.settings_hash(prior_hash, options=spelled)]
