"""Sampler options: one typed model per sampler, made from its signature; one source of
defaults per sampler (``resolve_options``); one canonical form of what a user sets."""

from __future__ import annotations

import inspect

import pytest

from restoreflow.samplers import (
    SAMPLER_NAMES,
    SAMPLERS,
    TASKS,
    canonical_options,
    check_options,
    options_model,
    resolve_options,
)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_sampler_resolves_valid_options_for_every_task(name):
    model = options_model(name)
    assert "progress" not in model.model_fields and "steps" not in model.model_fields
    params = inspect.signature(SAMPLERS[name]).parameters
    for task in TASKS:
        for sigma_y in (0.0, 0.01, 0.05):
            opts = resolve_options(name, task, sigma_y)
            assert set(opts) == set(model.model_fields)
            model(**opts)  # every resolved value is a valid option
            assert set(opts) <= set(params)


def test_task_defaults_are_the_tuned_values():
    # pinned: merging the tables into resolve_options changes no value
    d = resolve_options("ddpg", "deblur", 0.05)
    assert (d["gamma"], d["zeta"], d["eta_tilde"], d["step_size"]) == (8.0, 1.0, 0.7, "decay")
    assert {k: resolve_options("ddnm", "deblur", 0.05)[k] for k in ("eta", "eta_tilde")} == \
        dict(eta=1.0, eta_tilde=4.0)
    assert {k: resolve_options("dps", "sr", 0.01)[k] for k in ("eta", "zeta_prime")} == \
        dict(eta=1.0, zeta_prime=10.0)
    assert {k: resolve_options("diffpir", "sr", 0.01)[k] for k in ("lam", "zeta")} == \
        dict(lam=0.25, zeta=1.0)
    assert resolve_options("hqs", "inpaint", 0.01)["sigma_start"] == 75 / 255


def test_noise_level_sets_some_defaults():
    """DDPG steps at a constant size without noise; HQS weighs the data more when
    deblurring at low noise and denoises from the noise level itself."""
    assert resolve_options("ddpg", "deblur", 0.0)["step_size"] == "constant"
    assert resolve_options("ddpg", "deblur", 0.05)["step_size"] == "decay"
    assert resolve_options("hqs", "deblur", 0.01)["lam"] == 0.3
    assert resolve_options("hqs", "deblur", 0.05)["lam"] == 0.1
    assert resolve_options("hqs", "sr", 0.01)["lam"] == 0.1
    assert resolve_options("hqs", "denoise", 0.1)["sigma_start"] == 0.1


def test_user_options_override_and_unknown_tasks_are_refused():
    assert resolve_options("ddpg", "deblur", 0.05, {"zeta": "0.3"})["zeta"] == 0.3
    with pytest.raises(ValueError, match="unknown task kind 'dehaze'"):
        resolve_options("ddpg", "dehaze", 0.05)
    with pytest.raises(ValueError, match="unknown option 'gama'"):
        resolve_options("ddpg", "deblur", 0.05, {"gama": 1})


@pytest.mark.parametrize(("name", "opts", "match"), [
    ("ddpg", {"gama": 3}, r"unknown option 'gama' of sampler ddpg; its options: gamma, zeta"),
    ("ddpg", {"zeta": 3}, r"option zeta=3 of sampler ddpg: .*less than or equal to 1"),
    ("ddpg", {"gamma": "eight"}, r"option gamma='eight' of sampler ddpg: .*valid number"),
    ("ddpg", {"step_size": "fast"}, r"'auto', 'constant' or 'decay'"),
    ("ddnm", {"eta": -0.1}, r"option eta=-0.1 of sampler ddnm"),
    ("ddnm", {"eta_tilde": "x"}, r"option eta_tilde='x' of sampler ddnm"),
    ("diffpir", {"lam": 0}, r"option lam=0 of sampler diffpir: .*greater than 0"),
    ("diffpir", {"zeta": [1]}, r"option zeta=\[1\] of sampler diffpir"),
    ("dps", {"zeta": 1.0}, r"unknown option 'zeta' of sampler dps"),
    ("dps", {"zeta_prime": "big"}, r"option zeta_prime='big' of sampler dps"),
    ("hqs", {"lam": -1}, r"option lam=-1 of sampler hqs: .*greater than 0"),
    ("hqs", {"zeta": "sometimes"}, r"option zeta='sometimes' of sampler hqs"),
    ("idbp", {"delta_decay": 2}, r"option delta_decay=2 of sampler idbp"),
    ("idbp", {"eps": "none"}, r"option eps='none' of sampler idbp"),
])
def test_bad_options_are_refused_by_name(name, opts, match):
    with pytest.raises(ValueError, match=match):
        check_options(name, opts)


@pytest.mark.parametrize(("name", "spellings", "canonical"), [
    ("ddpg", [{"gamma": 8}, {"gamma": 8.0}, {"gamma": "8"}, {"gamma": "8.0"}], {"gamma": 8}),
    ("ddpg", [{"zeta": 0.5}, {"zeta": "0.5"}, {"zeta": "5e-1"}], {"zeta": 0.5}),
    ("hqs", [{"zeta": "auto"}], {"zeta": "auto"}),
    ("hqs", [{"lam": "0.3", "clip_x0": "false"}, {"clip_x0": False, "lam": 0.3}],
     {"clip_x0": False, "lam": 0.3}),
    ("idbp", [{"delta": 0.1}, {"delta": "0.1"}], {"delta": 0.1}),
])
def test_one_canonical_form_whatever_the_spelling(name, spellings, canonical):
    for s in spellings:
        out = canonical_options(name, s)
        assert out == canonical and list(out) == sorted(out), s
        assert [type(v) for v in out.values()] == [type(v) for v in canonical.values()]


def test_unknown_sampler_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of ddnm, ddpg, diffpir, dps"):
        options_model("ddgp")


# one wrong name, one wrong type and one out-of-range value per sampler
BAD = {
    "ddpg": ({"gama": 1}, {"gamma": "eight"}, {"zeta": 2}),
    "ddnm": ({"zeta": 1}, {"eta": "high"}, {"eta": 1.5}),
    "dps": ({"zeta": 1}, {"zeta_prime": "x"}, {"eta": -1}),
    "diffpir": ({"gamma": 1}, {"lam": "x"}, {"lam": 0}),
    "hqs": ({"lambda": 1}, {"zeta": "x"}, {"lam": -1}),
    "idbp": ({"lam": 1}, {"delta_decay": "x"}, {"delta_decay": 2}),
}
GOOD = {"ddpg": {"gamma": "8"}, "ddnm": {"eta": "0.5"}, "dps": {"zeta_prime": "20"},
        "diffpir": {"lam": "1"}, "hqs": {"lam": "0.3"}, "idbp": {"eps": "1"}}


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_options_through_the_run_spec_are_coerced_or_refused_in_one_line(name):
    from restoreflow.spec import RunSpec, SpecError

    base = {"sources": ["in"], "degradation": "gaussian_blur(sigma=2)+gaussian_noise(sigma=0.01)"}
    good = RunSpec.from_dict({**base, "restore": {"sampler": name, "options": GOOD[name]}})
    key, text = next(iter(GOOD[name].items()))
    assert good.restore.options == canonical_options(name, {key: float(text)})
    assert not isinstance(good.restore.options[key], str)  # coerced, not the text
    for bad in BAD[name]:
        with pytest.raises(SpecError) as exc:
            RunSpec.from_dict({**base, "restore": {"sampler": name, "options": bad}})
        msg = str(exc.value)
        assert "\n" not in msg and msg.startswith("run spec: restore.options: "), msg
        assert f"sampler {name}" in msg and repr(next(iter(bad))).strip("'") in msg, msg


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_options_through_the_api_hash_alike_whatever_the_spelling(name):
    from pydantic import ValidationError

    from restoreflow.stages.config import RestoreConfig

    deg = "gaussian_blur(sigma=2)+gaussian_noise(sigma=0.01)"
    key, text = next(iter(GOOD[name].items()))
    spellings = [{key: text}, {key: float(text)}]
    if float(text).is_integer():
        spellings.append({key: int(float(text))})
    hashes = {RestoreConfig(degradation=deg, restore={"sampler": name, "options": s})
              .settings_hash("p") for s in spellings}
    assert len(hashes) == 1
    for bad in BAD[name]:
        with pytest.raises(ValidationError, match=f"sampler {name}"):
            RestoreConfig(degradation=deg, restore={"sampler": name, "options": bad})


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_options_through_the_cli_are_refused_in_one_line_before_any_work(name, tmp_path,
                                                                         monkeypatch):
    """``--option`` of restore: a wrong name, type or range is one line (exit 2) before
    the store is opened; a text value is coerced (the verb goes on to the store)."""
    from typer.testing import CliRunner

    from restoreflow.cli import app

    monkeypatch.chdir(tmp_path)
    args = ["restore", "-d", "gaussian_blur(sigma=2)+gaussian_noise(sigma=0.01)", "--store",
            "st", "--sampler", name]
    for bad in BAD[name]:
        (key, value), = bad.items()
        r = CliRunner().invoke(app, [*args, "--option", f"{key}={value}"])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1, r.output
        assert lines[0].startswith("error: --option") and key in lines[0], lines[0]
        assert f"sampler {name}" in lines[0], lines[0]
    (key, value), = GOOD[name].items()
    r = CliRunner().invoke(app, [*args, "--option", f"{key}={value}"])
    assert "--option" not in r.output and "no store here" in r.output, r.output
    assert not (tmp_path / "st").exists()
