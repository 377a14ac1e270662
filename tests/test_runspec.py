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
        ({"adapt": {"neighbors": 3}}, "adapt.neighbors: unknown field (allowed: corpus"),
        ({"restore": {"sampler": "foo"}}, "restore.sampler: Input should be 'ddpg'"),
        ({"restore": {"steps": 10**6}}, "restore.steps: Input should be less than or equal"),
        ({"restore": {"steps": "many"}}, "restore.steps: Input should be a valid integer"),
        ({"degradation": "gaussian_blur(sigma=-1)"}, "degradation"),
        ({"calibration": {"clean": ["c/"], "alpha": 1.5}}, "calibration.alpha"),
        ({"adapt": {"neighbours": 0}}, "adapt.neighbours: Input should be greater than"),
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
