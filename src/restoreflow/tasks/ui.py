"""What a run shows in the Prefect UI: its flow run's name and its artifacts."""

from __future__ import annotations


def name_flow_run(name: str) -> None:
    """Give this flow run the run id recorded in the store, when the one chosen at its
    start (``names.pipeline_run_name``) differs: the clock moved on before the run id was
    taken (e.g. while waiting for the store's lock)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id or flow_run.name == name:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_name(flow_run.id, name)


def publish_run(name: str, summary, rows: list) -> None:
    """The run's summary (markdown) and per-image quality table as Prefect artifacts."""
    import re

    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from restoreflow.stages import records

    key = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "run"
    create_markdown_artifact(markdown=records.summary_markdown(summary), key=f"{key}-summary",
                             description="restoreflow run summary")
    table = records.quality_table(rows)
    if table:
        create_table_artifact(table=table, key=f"{key}-quality",
                              description="per-image conformal bounds")
