"""Run specs: validation names the field and the allowed values; hash and YAML round-trip."""

from __future__ import annotations

import pytest

from restoreflow.spec import RunSpec, SpecError

BASE = {"sources": ["imgs/"], "degradation": "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)"}


def test_defaults_hash_and_yaml_round_trip(tmp_path):
    spec = RunSpec.from_dict(BASE)
    # the default: HQS with its own step count (the sampler's signature default)
    assert spec.restore.sampler == "hqs" and spec.restore.steps == 8
    assert RunSpec.from_dict({**BASE, "restore": {"sampler": "ddpg"}}).restore.steps == 100
    assert spec.degradation.startswith("gaussian_blur(boundary=circular,sigma=3")
    p = tmp_path / "run.yaml"
    p.write_text(spec.to_yaml())
    again = RunSpec.from_yaml(str(p))
    # relative paths are taken against the spec file's directory
    assert again == spec.resolved(str(tmp_path)) and again.sources == [str(tmp_path / "imgs")]
    assert RunSpec.from_yaml(str(p)).hash == again.hash
    assert again.resolved(str(tmp_path / "elsewhere")) is again  # nothing relative left
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
    from restoreflow.stages.config import RestoreConfig

    adapt = {"enabled": True, "rank": 4, "alpha": 2.0, "lr": 1e-3, "targets": ["conv1"],
             "max_t": 250}
    unet = {**BASE, "prior": "unet"}  # LoRA adapts a diffusion UNet
    cfg = RestoreConfig.from_run(RunSpec.from_dict({**unet, "adapt": adapt}))
    assert cfg.lora_settings() == LoraSettings(rank=4, alpha=2.0, lr=1e-3, max_t=250,
                                               target_modules=("conv1",))
    assert RestoreConfig.from_dict(cfg.to_dict()) == cfg
    plain = RestoreConfig.from_run(RunSpec.from_dict({**unet, "adapt": {"enabled": True}}))
    assert plain.lora_settings() == LoraSettings()
    assert cfg.settings_hash("p") != plain.settings_hash("p")
    # without adaptation the LoRA settings do not matter
    off = RunSpec.from_dict({**unet, "adapt": {**adapt, "enabled": False}})
    assert RestoreConfig.from_run(off).settings_hash("p") == RestoreConfig.from_run(
        RunSpec.from_dict(unet)).settings_hash("p")
    with pytest.raises(ValueError, match="adaptation needs a diffusion UNet prior; prior "
                       "'ffdnet' is a denoiser"):
        RestoreConfig.from_run(RunSpec.from_dict({**BASE, "adapt": adapt}))


def test_relative_paths_are_resolved_against_the_spec_file(tmp_path):
    """Issue 19 item 3: a spec file's relative paths name files next to it, whatever the
    working directory, and the spec (thus the manifest) records them absolute; URIs,
    absolute and ~ paths and hub ids are kept."""
    (tmp_path / "specs" / "prior").mkdir(parents=True)
    (tmp_path / "specs" / "run.yaml").write_text(
        "sources: [imgs/, 's3://bucket/x/', /abs/a.png, ~/pics, 'more/*.png']\n"
        "store: ../store\n"
        "degradation: 'kernel_blur(path=psf.npy)+gaussian_noise(sigma=0.1)'\n"
        "prior: prior\n"
        "adapt: {corpus: [ref/]}\n"
        "calibration: {clean: [cal/]}\n"
        "export: {out: out}\n")
    spec = RunSpec.from_yaml(str(tmp_path / "specs" / "run.yaml"))
    d = tmp_path / "specs"
    assert spec.sources == [str(d / "imgs"), "s3://bucket/x/", "/abs/a.png", "~/pics",
                            str(d / "more/*.png")]
    assert spec.store == str(tmp_path / "store") and spec.prior == str(d / "prior")
    assert spec.adapt.corpus == [str(d / "ref")]
    assert spec.calibration.clean == [str(d / "cal")]
    assert spec.export.out == str(d / "out") and spec.report == str(d / "report.html")
    assert spec.degradation_spec.files() == [("kernel_blur", str(d / "psf.npy"))]
    # `rerun` of an older manifest keeps its degradation (its text is hashed into seeds)
    rel = RunSpec.from_dict({**BASE, "degradation": "kernel_blur(path=psf.npy)"})
    kept = rel.resolved(str(d), degradation_files=False)
    assert kept.degradation == rel.degradation and kept.sources == [str(d / "imgs")]
    # a hub id stays a hub id when no such directory exists next to the spec
    hub = RunSpec.from_dict({**BASE, "prior": "owner/model"}).resolved(str(d))
    assert hub.prior == "owner/model"


def test_sampler_option_typo_is_refused_when_the_spec_is_parsed(tmp_path):
    import pytest

    from restoreflow.spec import RunSpec

    spec = {"name": "t", "sources": [str(tmp_path)], "store": str(tmp_path / "s"),
            "degradation": "gaussian_blur(sigma=1)",
            "restore": {"sampler": "ddpg", "options": {"gama": 3}}}
    with pytest.raises(Exception, match=r"unknown option 'gama' of sampler ddpg; its options"):
        RunSpec.model_validate(spec)
    spec["restore"]["options"] = {"zeta": 2.0}
    with pytest.raises(Exception, match=r"option zeta=2.0 of sampler ddpg"):
        RunSpec.model_validate(spec)
    spec["restore"]["options"] = {"gamma": 3}
    assert RunSpec.model_validate(spec).restore.options == {"gamma": 3}


def test_sampler_choices_are_the_registry():
    from typing import get_args

    from restoreflow.samplers import SAMPLERS
    from restoreflow.spec import RestoreOptions

    assert get_args(RestoreOptions.model_fields["sampler"].annotation) == tuple(SAMPLERS)


@pytest.mark.parametrize("degradation, sampler, steps", [
    ("gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)", "hqs", 8),
    ("sr(factor=4)+gaussian_noise(sigma=0.01)", "hqs", 8),
    ("inpaint(ratio=0.7)+gaussian_noise(sigma=0.01)", "ddpg", 20),
    ("denoise+gaussian_noise(sigma=0.1)", "hqs", 1),
])
def test_the_default_solver_is_chosen_per_task(degradation, sampler, steps):
    from restoreflow.stages.config import RestoreConfig

    spec = RunSpec.from_dict({**BASE, "degradation": degradation})
    assert (spec.restore.sampler, spec.restore.steps) == (sampler, steps)
    cfg = RestoreConfig(degradation=degradation, restore={"sampler": None, "steps": None})
    assert (cfg.restore.sampler, cfg.restore.steps) == (sampler, steps)
    assert RestoreConfig.from_run(spec).restore == cfg.restore
    # a solver named without steps takes its own default; steps alone keep the solver
    named = RunSpec.from_dict({**BASE, "degradation": degradation,
                               "restore": {"sampler": "idbp"}})
    assert named.restore.steps == 20
    only_steps = RunSpec.from_dict({**BASE, "degradation": degradation,
                                    "restore": {"steps": 3}})
    assert (only_steps.restore.sampler, only_steps.restore.steps) == (sampler, 3)


def test_validator_messages_carry_no_pydantic_prefix():
    """A validator's own message reaches the user as written, without "Value error, "."""
    from restoreflow.spec import RunSpec, SpecError

    with pytest.raises(SpecError) as exc:
        RunSpec.from_dict({"sources": ["x"], "degradation": "gaussian_blur(sigma=-1)"})
    assert "degradation" in str(exc.value) and "Value error" not in str(exc.value)
    with pytest.raises(SpecError) as exc:
        RunSpec.from_dict({"sources": ["x"], "degradation": "denoise+gaussian_noise(sigma=0.1)",
                           "restore": {"sampler": "ddpg", "options": {"gamma": "eight"}}})
    assert "gamma" in str(exc.value) and "Value error" not in str(exc.value)
