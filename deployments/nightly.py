"""Entry point of the scheduled archive deployment (see prefect.yaml in this folder).

The flow loads a run spec (YAML) and runs the pipeline on the configured Dask cluster
(RESTOREFLOW_DASK_ADDRESS, or an embedded local cluster). Ingest is incremental and
restored images are keyed by content, so each nightly run processes only what is new
under the spec's sources.
"""

from __future__ import annotations

from prefect import flow


@flow(name="nightly-archive", flow_run_name="nightly {spec_path}")
def nightly(spec_path: str) -> dict:
    from restoreflow.flows.pipeline import pipeline_flow
    from restoreflow.settings import get_settings
    from restoreflow.spec import RunSpec
    from restoreflow.tasks.runner import dask_task_runner

    spec = RunSpec.from_yaml(spec_path)
    runner = dask_task_runner(get_settings())
    return pipeline_flow.with_options(task_runner=runner)(spec=spec.model_dump(mode="json"))
