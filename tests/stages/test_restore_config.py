"""RestoreConfig: one validated settings model, the run spec's sections, one wire form."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from restoreflow.spec import AdaptSettings, RestoreOptions, RunSpec
from restoreflow.stages.config import RestoreConfig

D = "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)"

# RestoreConfig.to_dict() of edcd80a (a dataclass, flat fields): the "restore_config" of
# the manifests it wrote; settings hash computed with that code
OLD_FLAT = {"degradation": D, "seed": 3, "sampler": "ddnm", "steps": 20,
            "options": {"eta": 0.5}, "tile": 256, "overlap": 64, "tile_batch": 4,
            "posterior_samples": 2, "prior": "/p", "adapt": True, "neighbours": 4,
            "adapt_steps": None, "adapt_rank": 4, "adapt_alpha": None, "adapt_lr": None,
            "adapt_targets": ["conv1"], "adapt_max_t": None, "embedder": "efficientnet-lite0",
            "index": "default", "lower_q": 0.05, "upper_q": 0.95}
OLD_FLAT_HASH = "bd5287d2f6505ecd"


def test_the_sections_are_the_run_specs_models_with_the_same_names():
    spec = RunSpec.from_dict({
        "sources": ["x/"], "degradation": D, "seed": 4, "prior": "unet",
        "restore": {"sampler": "dps", "steps": 7, "options": {"zeta_prime": 2.0}},
        "adapt": {"enabled": True, "corpus": ["refs/"], "targets": ["to_q"], "max_t": 9}})
    cfg = RestoreConfig.from_run(spec)
    assert cfg.restore == spec.restore and type(cfg.restore) is RestoreOptions
    assert type(cfg.adapt) is AdaptSettings and "corpus" not in AdaptSettings.model_fields
    assert cfg.adapt.model_dump() == spec.adapt.model_dump(exclude={"corpus"})
    assert (cfg.seed, cfg.degradation) == (4, spec.degradation)
    assert cfg.lora_settings().target_modules == ("to_q",) and cfg.lora_settings().max_t == 9


def test_old_flat_form_loads_and_hashes_as_before():
    cfg = RestoreConfig.from_dict(OLD_FLAT)
    assert cfg.restore.sampler == "ddnm" and cfg.restore.options == {"eta": 0.5}
    assert cfg.adapt.enabled and cfg.adapt.rank == 4 and cfg.adapt.targets == ["conv1"]
    assert cfg.settings_hash("h") == OLD_FLAT_HASH
    nested = RestoreConfig(
        degradation=D, seed=3, prior="/p",
        restore={"sampler": "ddnm", "steps": 20, "options": {"eta": 0.5},
                 "posterior_samples": 2},
        adapt={"enabled": True, "neighbours": 4, "rank": 4, "targets": ["conv1"],
               "match_degradation": False})  # implied by the (old) flat form
    assert nested == cfg and not cfg.adapt.match_degradation


def test_one_wire_form_round_trips_through_json():
    cfg = RestoreConfig(degradation=D, seed=2, prior="/p",
                        restore={"sampler": "ddpg", "options": {"gamma": 8, "step_size": "decay"}},
                        adapt={"enabled": True, "alpha": 4.0})
    wire = json.loads(json.dumps(cfg.model_dump(mode="json")))
    assert set(wire) == {"degradation", "seed", "prior", "restore", "adapt", "index",
                         "lower_q", "upper_q"}
    back = RestoreConfig.model_validate(wire)
    assert back == cfg and back.settings_hash("h") == cfg.settings_hash("h")
    assert back.restore.options["gamma"] == 8 and isinstance(back.restore.options["gamma"], int)
    assert RestoreConfig.from_dict(cfg.to_dict()) == cfg


def test_degradation_is_canonical():
    cfg = RestoreConfig(degradation="gaussian_blur(sigma=3)")
    assert cfg.degradation == cfg.spec.text and cfg.degradation.startswith(
        "gaussian_blur(boundary=circular,sigma=3")


@pytest.mark.parametrize("fields, where, needle", [
    ({"restore": {"sampler": "ddpg", "options": {"gama": 3}}}, ("restore", "options"),
     "unknown option 'gama' of sampler ddpg; its options: gamma, zeta"),
    ({"restore": {"sampler": "dps", "options": {"zeta": 1.0}}}, ("restore", "options"),
     "unknown option 'zeta' of sampler dps"),
    ({"restore": {"sampler": "ddpg", "options": {"zeta": 3}}}, ("restore", "options"),
     "option zeta=3 of sampler"),
    ({"restore": {"sampler": "ddgp"}}, ("restore", "sampler"), "Input should be 'ddpg'"),
    ({"restore": {"steps": 0}}, ("restore", "steps"), "greater than or equal to 1"),
    ({"restore": {"tile": 16}}, ("restore", "tile"), "greater than or equal to 32"),
    ({"restore": {"overlap": -1}}, ("restore", "overlap"), "greater than or equal to 0"),
    ({"restore": {"posterior_samples": 0}}, ("restore", "posterior_samples"),
     "greater than or equal to 1"),
    ({"adapt": {"neighbours": 0}}, ("adapt", "neighbours"), "greater than or equal to 1"),
    ({"adapt": {"targets": []}}, ("adapt", "targets"), "at least 1 item"),
    ({"adapt": {"corpus": ["x/"]}}, ("adapt", "corpus"), "Extra inputs are not permitted"),
    ({"seed": -1}, ("seed",), "greater than or equal to 0"),
    ({"lower_q": 0.9, "upper_q": 0.5}, (), "lower_q=0.9 must be below upper_q=0.5"),
    ({"degradation": "gaussian_blur(sigma=-1)"}, ("degradation",), "gaussian_blur"),
    ({"prior": "s3://user:secret@host/p"}, ("prior",), "credentials in a URI"),
    ({"colour": 1}, ("colour",), "Extra inputs are not permitted"),
    ({"steps": 5, "restore": {"steps": 5}}, (), "either as restore=... or as flat fields"),
])
def test_bad_settings_are_refused_by_field(fields, where, needle):
    with pytest.raises(ValidationError) as err:
        RestoreConfig(**{"degradation": D, **fields})
    e = err.value.errors()[0]
    assert tuple(e["loc"]) == where and needle in e["msg"], e


def test_prior_is_chosen_once_on_the_driver(monkeypatch):
    from restoreflow.settings import get_settings

    monkeypatch.setenv("RESTOREFLOW_PRIOR", "/env/prior")
    get_settings.cache_clear()
    try:
        cfg = RestoreConfig(degradation=D)
        assert cfg.prior is None and cfg.with_chosen_prior().prior == "/env/prior"
        given = RestoreConfig(degradation=D, prior="/mine")
        assert given.with_chosen_prior() is given
    finally:
        monkeypatch.delenv("RESTOREFLOW_PRIOR")
        get_settings.cache_clear()
