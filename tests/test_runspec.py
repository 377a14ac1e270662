"""Run specs: validation names the field and the allowed values; hash and YAML round-trip."""

from __future__ import annotations

import pytest

from restoreflow.spec import RunSpec, SpecError

BASE = {"sources": ["imgs/"], "degradation": "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)"}


def test_defaults_hash_and_yaml_round_trip(tmp_path):
    spec = RunSpec.from_dict(BASE)
    assert spec.restore.sampler == "ddpg" and spec.restore.steps == 100
    assert spec.degradation.startswith("gaussian_blur(boundary=circular,sigma=3")
    p = tmp_path / "run.yaml"
    p.write_text(spec.to_yaml())
    again = RunSpec.from_yaml(str(p))
    assert again == spec and again.hash == spec.hash
    assert RunSpec.from_dict({**BASE, "seed": 1}).hash != spec.hash


@pytest.mark.parametrize(
    "patch,needle",
    [
        ({"colour": 1}, "colour: unknown field (allowed: adapt, calibration"),
        ({"adapt": {"neighbors": 3}}, "adapt.neighbors: unknown field (allowed: alpha, corpus"),
        ({"restore": {"sampler": "foo"}}, "restore.sampler: Input should be 'ddpg'"),
        ({"restore": {"steps": 10**6}}, "restore.steps: Input should be less than or equal"),
        ({"restore": {"steps": "many"}}, "restore.steps: Input should be a valid integer"),
        ({"degradation": "gaussian_blur(sigma=-1)"}, "degradation"),
        ({"calibration": {"clean": ["c/"], "alpha": 1.5}}, "calibration.alpha"),
        ({"adapt": {"neighbours": 0}}, "adapt.neighbours: Input should be greater than"),
        ({"adapt": {"targets": []}}, "adapt.targets: List should have at least 1 item"),
        ({"adapt": {"max_t": 0}}, "adapt.max_t: Input should be greater than"),
        ({"sources": []}, "sources"),
        ({"name": "../etc"}, "name"),
    ],
)
def test_bad_specs_name_the_field(patch, needle):
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict({**BASE, **patch})
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        RunSpec.from_yaml(str(tmp_path / "missing.yaml"))
    p = tmp_path / "bad.yaml"
    p.write_text("sources: [a\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        RunSpec.from_yaml(str(p))
    p.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="mapping"):
        RunSpec.from_yaml(str(p))


def test_adapt_lora_settings_reach_the_adapter_and_the_settings_hash():
    from restoreflow.models.lora import LoraSettings
    from restoreflow.pipeline import RestoreConfig

    adapt = {"enabled": True, "rank": 4, "alpha": 2.0, "lr": 1e-3, "targets": ["conv1"],
             "max_t": 250}
    cfg = RestoreConfig.from_run(RunSpec.from_dict({**BASE, "adapt": adapt}))
    assert cfg.lora_settings() == LoraSettings(rank=4, alpha=2.0, lr=1e-3, max_t=250,
                                               target_modules=("conv1",))
    assert RestoreConfig.from_dict(cfg.to_dict()) == cfg
    plain = RestoreConfig.from_run(RunSpec.from_dict({**BASE, "adapt": {"enabled": True}}))
    assert plain.lora_settings() == LoraSettings()
    assert cfg.settings_hash("p") != plain.settings_hash("p")
    # without adaptation the LoRA settings do not matter
    off = RunSpec.from_dict({**BASE, "adapt": {**adapt, "enabled": False}})
    assert RestoreConfig.from_run(off).settings_hash("p") == RestoreConfig.from_run(
        RunSpec.from_dict(BASE)).settings_hash("p")
