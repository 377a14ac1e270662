"""Reading what older versions wrote.

A manifest records the run spec as given (``spec``), the settings it resolved
(``restore_config``) and the hash of the prior it used (``prior_hash``). Before the
denoiser prior, a spec without ``prior:`` meant the shipped diffusion UNet; it now means
FFDNet. :func:`spec_of_manifest` gives the spec to rerun: the prior named explicitly
(the spec's, else the resolved settings'), else ``unet`` when the recorded hash is the
shipped UNet's, so an old manifest reruns with the prior it was made with.
"""

from __future__ import annotations


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
