"""What several verbs share: the sampler and format choices, the wording of --store and
--option, and turning flags into validated settings (``--option KEY=VALUE`` parsed, a
bad value reported by the flag that set it)."""

from __future__ import annotations

from typing import Literal

import typer

from restoreflow.cli.runtime import fail
from restoreflow.errors import pydantic_message

# the sampler registry's names as a typer choice, without importing torch for --help
# (tests/cli/test_cli_store.py keeps them equal to restoreflow.samplers.SAMPLERS)
SamplerName = Literal["ddpg", "ddnm", "dps", "diffpir", "hqs", "idbp"]
ExportFormat = Literal["png", "tiff", "fits"]
SAMPLES_HELP = ("Posterior samples J (J >= 2: uncertainty maps and per-pixel intervals); "
                "restore and calibrate must use the same")
# the one wording of every --store option (restoreflow.settings.Settings.store)
STORE_HELP = "Store URI (default: $RESTOREFLOW_STORE, else ./restoreflow-store)."
OPTION_HELP = ("A sampler option, repeatable (e.g. --option gamma=8); a wrong name is "
                "refused with the sampler's options.")

# the restore settings' flags, one declaration for restore, score and calibrate
DEGRADATION = typer.Option(..., "--degradation", "-d", help="The degradation of y")
# (defaults that are not the option's value go in show_default: rich markup would eat a
# "[default: ...]" written into the help text)
SAMPLER = typer.Option(None, "--sampler", help="Solver", show_default="per task, see README")
STEPS = typer.Option(None, "--steps", min=1, max=1000,
                     help="Prior evaluations", show_default="the solver's")
SAMPLES = typer.Option(None, "--samples", min=1, max=64, help=SAMPLES_HELP, show_default="1")
SEED = typer.Option(0, "--seed")
ADAPT = typer.Option(False, "--adapt/--no-adapt", help="ADIR adaptation")
NEIGHBOURS = typer.Option(8, "--neighbours", min=1)
ADAPT_STEPS = typer.Option(None, "--adapt-steps", min=1)
PRIOR = typer.Option(None, "--prior", help="ffdnet (default), unet, hybrid, a weight file, "
                     "or a diffusers model dir / hub id")
OPTION = typer.Option(None, "--option", metavar="KEY=VALUE", help=OPTION_HELP)


# fields of RestoreConfig and CalibrationOptions -> the flag that sets them
_CONFIG_FLAGS = {"degradation": "--degradation", "seed": "--seed", "prior": "--prior",
                 "restore.sampler": "--sampler", "restore.steps": "--steps",
                 "restore.options": "--option", "restore.posterior_samples": "--samples",
                 "adapt.enabled": "--adapt", "adapt.neighbours": "--neighbours",
                 "adapt.steps": "--adapt-steps", "clean": "--clean", "alpha": "--alpha",
                 "method": "--method", "group_by": "--group-by",
                 "pixel_scale": "--pixel-scale", "pixel_bound": "--pixel-bound",
                 "pixel_epsilon": "--pixel-epsilon", "pixel_delta": "--pixel-delta"}


def sampler_options(items: list[str] | None) -> dict:
    """``--option KEY=VALUE`` (repeatable) as a dict: ``8`` an int, ``0.5`` or ``1e-5`` a
    float, ``true``/``false`` a bool, anything else the text (as a run spec's YAML)."""
    out: dict = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            fail(f"--option: expected KEY=VALUE, got {item!r}")
        if key in out:
            fail(f"--option: {key!r} given twice")
        out[key] = _option_value(text)
    return out


def _option_value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def restore_fields(sampler: str | None, steps: int | None, samples: int | None,
                   option: list[str] | None) -> dict:
    """The ``restore`` section of the settings from restore's and calibrate's flags: a
    flag not given is left to the settings' own default (the same for both verbs)."""
    fields = {"sampler": sampler, "steps": steps, "options": sampler_options(option)}
    return fields | ({"posterior_samples": samples} if samples is not None else {})


def validated_model(model, **fields):
    """``model(**fields)`` (the restore settings, the calibration options): a bad value is
    one line naming its flag, before anything is opened or written."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        fail(f"{_CONFIG_FLAGS.get(where, where or 'settings')}: {pydantic_message(err)}")
