"""Old manifests rerun with the prior they were made with (compat.spec_of_manifest)."""

from __future__ import annotations

from restoreflow.compat import spec_of_manifest
from restoreflow.models import priors

SPEC = {"name": "old", "sources": ["/x"], "degradation": "gaussian_blur(sigma=2)"}


def test_an_old_manifest_without_a_prior_reruns_on_the_unet():
    unet = priors.prior_hash("unet")
    old = {"spec": {**SPEC, "prior": None}, "restore_config": {"prior": None},
           "prior_hash": unet}
    assert spec_of_manifest(old)["prior"] == "unet"
    new = {"spec": SPEC, "restore_config": {"prior": None},
           "prior_hash": priors.prior_hash(None)}
    assert spec_of_manifest(new)["prior"] == priors.DEFAULT_PRIOR == "ffdnet"


def test_an_explicit_prior_is_kept():
    assert spec_of_manifest({"spec": {**SPEC, "prior": "/p"}, "prior_hash": "x"})["prior"] == "/p"
    env = {"spec": SPEC, "restore_config": {"prior": "/env"}, "prior_hash": "y"}
    assert spec_of_manifest(env)["prior"] == "/env"
    unknown = {"spec": SPEC, "prior_hash": "0" * 64}
    assert "prior" not in spec_of_manifest(unknown)
