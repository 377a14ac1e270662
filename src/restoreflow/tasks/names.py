"""Names of Prefect flow and task runs, so that the Prefect UI reads like the report.

Prefect calls these with the run's parameters (``flow_run_name=`` / ``task_run_name=``);
they return plain strings. A task run is named after its image: the original file name
from the store (``astronaut.png``) and the first 8 digits of the image id; a flow run
after what it does, and a pipeline run after its run id (``<spec name>-<time>-<spec
hash>``, the id of its row in ``tables/runs.json``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

ID_DIGITS = 8


def run_id(name: str, spec_hash: str, when: float | None = None) -> str:
    """A pipeline run's id: ``<spec name>-<local time YYYYmmddTHHMMSS>-<spec hash[:8]>``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(when))
    return f"{name}-{stamp}-{spec_hash[:8]}"


def image_label(store_uri: str, image_id: str, collection: str = "input") -> str:
    """``<file name> [<id[:8]>]``, or ``[<id[:8]>]`` when the store has no name for it.

    Only a label: the task that carries it reads the same image and fails loudly if the
    store cannot be read, so a failed lookup here falls back to the id."""
    from restoreflow.tasks.common import open_store

    short = f"[{str(image_id)[:ID_DIGITS]}]"
    try:
        store = open_store(store_uri)
        try:
            name = store.attrs(collection, image_id).get("name")
        except KeyError:
            name = store.attrs("input", image_id).get("name")
    except (KeyError, OSError, ValueError):
        return short
    return f"{name} {short}" if name else short


def _images_label(store_uri: str, image_ids: list[str], collection: str = "input") -> str:
    if not image_ids:
        return "no images"
    first = image_label(store_uri, image_ids[0], collection)
    return first if len(image_ids) == 1 else f"{first} +{len(image_ids) - 1} more"


# --- task runs (callables taking the task's bound parameters) -------------------------


def restore_task_name(parameters: Mapping[str, Any]) -> str:
    return "restore " + image_label(parameters["store_uri"], parameters["image_id"],
                                    parameters.get("y_collection", "input"))


def intervals_task_name(parameters: Mapping[str, Any]) -> str:
    return "intervals " + image_label(parameters["store_uri"], parameters["image_id"])


def simulate_task_name(parameters: Mapping[str, Any]) -> str:
    return "simulate " + _images_label(parameters["store_uri"], parameters["image_ids"])


def metrics_task_name(parameters: Mapping[str, Any]) -> str:
    return "truth-metrics " + _images_label(parameters["store_uri"], parameters["image_ids"])


def export_task_name(parameters: Mapping[str, Any]) -> str:
    n = len(parameters.get("image_ids") or [])
    return f"export {parameters['collection']} as {parameters['fmt']} ({n} images)"


def ingest_task_name(parameters: Mapping[str, Any]) -> str:
    sources = list(parameters.get("sources") or [])
    first = sources[0] if sources else "nothing"
    more = f" +{len(sources) - 1} more" if len(sources) > 1 else ""
    return f"ingest {first}{more}"


def index_task_name(parameters: Mapping[str, Any]) -> str:
    return f"index {parameters['name']} ({len(parameters.get('image_ids') or [])} images)"


def matched_index_task_name(parameters: Mapping[str, Any]) -> str:
    return f"index {parameters['name']} degraded ({parameters['degradation']})"


# --- flow runs (Prefect calls these without arguments; parameters via prefect.runtime) -


def _flow_parameters() -> dict:
    from prefect.runtime import flow_run

    return dict(flow_run.parameters or {})


def pipeline_run_name() -> str:
    """The run id the pipeline will record (the flow renames its run to the recorded id
    when it finishes, should the clock have moved on meanwhile, e.g. waiting for the
    store's lock)."""
    from restoreflow.spec import RunSpec, SpecError

    spec = _flow_parameters().get("spec") or {}
    try:  # validated already when the flow was called with a RunSpec (the CLI)
        run = spec if isinstance(spec, RunSpec) else RunSpec.from_dict(spec)
    except SpecError:  # the flow itself reports the bad spec, by field
        return f"{spec.get('name', 'run') if isinstance(spec, Mapping) else 'run'}-invalid-spec"
    return run_id(run.name, run.hash)


def _settings_label(cfg: Any) -> str:
    """``<degradation>, <sampler> <steps> steps`` of a flow's RestoreConfig parameter (the
    model, or its JSON form when the run came through the Prefect API)."""
    from pydantic import ValidationError

    from restoreflow.stages.config import RestoreConfig

    try:
        c = cfg if isinstance(cfg, RestoreConfig) else RestoreConfig.model_validate(cfg)
    except ValidationError:  # the flow itself reports the bad settings, by field
        return "invalid settings"
    return f"{c.degradation}, {c.restore.sampler} {c.restore.steps} steps"


def restore_flow_name() -> str:
    p = _flow_parameters()
    return (f"restore {p.get('y_collection', 'degraded')} -> {p.get('out', 'restored')}: "
            f"{_settings_label(p.get('cfg'))}")


def score_flow_name() -> str:
    p = _flow_parameters()
    return f"score {p.get('out', 'restored')}: {_settings_label(p.get('cfg'))}"


def simulate_flow_name() -> str:
    p = _flow_parameters()
    return (f"simulate {p.get('degradation')} seed {p.get('seed', 0)} -> "
            f"{p.get('collection', 'degraded')}")


def calibrate_flow_name() -> str:
    p = _flow_parameters()
    cal = p.get("calibration")
    alpha = cal.get("alpha", 0.1) if isinstance(cal, Mapping) else getattr(cal, "alpha", 0.1)
    return f"calibrate {_settings_label(p.get('cfg'))}, alpha {alpha}"


def train_prior_flow_name() -> str:
    p = _flow_parameters()
    return f"train-prior -> {p.get('out_dir')}"
