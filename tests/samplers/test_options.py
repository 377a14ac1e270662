"""Sampler options: one typed model per sampler, made from its signature."""

from __future__ import annotations

import pytest

from restoreflow.samplers import SAMPLERS, TASK_DEFAULTS, check_options, options_model
from restoreflow.stages.restore import DEFAULT_OPTIONS


def test_every_sampler_has_an_options_model_and_valid_task_defaults():
    assert set(TASK_DEFAULTS) == set(SAMPLERS) == set(DEFAULT_OPTIONS)
    for name, table in TASK_DEFAULTS.items():
        model = options_model(name)
        assert "progress" not in model.model_fields and "steps" not in model.model_fields
        assert set(table) == {"deblur", "sr", "inpaint", "denoise", "other"}
        for opts in table.values():
            check_options(name, opts)
            assert set(opts) <= set(model.model_fields)


def test_task_defaults_are_the_tuned_values():
    # pinned: moving the table into the sampler files changes no value
    assert DEFAULT_OPTIONS["ddpg"]["deblur"] == dict(gamma=8.0, zeta=1.0, eta_tilde=0.7,
                                                     step_size="decay")
    assert DEFAULT_OPTIONS["ddnm"]["deblur"] == dict(eta=1.0, eta_tilde=4.0)
    assert DEFAULT_OPTIONS["dps"]["sr"] == dict(eta=1.0, zeta_prime=10.0)
    assert DEFAULT_OPTIONS["diffpir"]["sr"] == dict(lam=0.25, zeta=1.0)


@pytest.mark.parametrize(("name", "opts", "match"), [
    ("ddpg", {"gama": 3}, r"unknown option 'gama' of sampler ddpg; its options: gamma, zeta"),
    ("ddpg", {"zeta": 3}, r"option zeta=3 of sampler ddpg: .*less than or equal to 1"),
    ("ddpg", {"step_size": "fast"}, r"'auto', 'constant' or 'decay'"),
    ("ddnm", {"eta": -0.1}, r"option eta=-0.1 of sampler ddnm"),
    ("diffpir", {"lam": 0}, r"option lam=0 of sampler diffpir: .*greater than 0"),
    ("dps", {"zeta": 1.0}, r"unknown option 'zeta' of sampler dps"),
])
def test_bad_options_are_refused_by_name(name, opts, match):
    with pytest.raises(ValueError, match=match):
        check_options(name, opts)


def test_unknown_sampler_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of ddnm, ddpg, diffpir, dps"):
        options_model("ddgp")


def test_noise_level_sets_some_defaults():
    """A sampler's noise_options adjust its task defaults by sigma_y: DDPG steps at a
    constant size without noise; HQS weighs the data more when deblurring at low noise."""
    from restoreflow.stages.restore import default_options

    assert default_options("ddpg", "deblur", 0.0)["step_size"] == "constant"
    assert default_options("ddpg", "deblur", 0.05)["step_size"] == "decay"
    assert default_options("hqs", "deblur", 0.01)["lam"] == 0.3
    assert default_options("hqs", "deblur", 0.05)["lam"] == 0.1
    assert default_options("hqs", "sr", 0.01)["lam"] == 0.1
    assert default_options("hqs", "deblur") == {"lam": 0.1}  # no noise level given
