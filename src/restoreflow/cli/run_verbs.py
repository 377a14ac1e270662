"""The verbs that restore: run (a spec end to end), rerun (a manifest's spec), restore,
calibrate, report, demo, and serve (the pipeline on a schedule)."""

from __future__ import annotations

import os

import typer

from restoreflow.cli import options as opt
from restoreflow.cli.flow_runs import (
    flow_failed,
    image_names,
    log_to_file,
    on_dask,
    print_summary,
)
from restoreflow.cli.options import (
    STORE_HELP,
    SamplerName,
    restore_fields,
    validated_model,
)
from restoreflow.cli.runtime import error_line, fail, profile_settings, run_preflight
from restoreflow.cli.store_checks import need_images, no_collection, open_cli_store
from restoreflow.cli.typer_app import app


def _run_spec(spec, verb: str) -> dict:
    """Check the spec (one line and nothing created on a failure), then run it."""
    from restoreflow.preflight import check_run
    from restoreflow.settings import get_settings

    run_preflight(check_run, spec, get_settings(), "spec")
    log_to_file(verb)
    uri = spec.store or get_settings().store
    before = image_names(uri)
    from restoreflow.flows.pipeline import pipeline_flow

    try:
        summary = on_dask(pipeline_flow)(spec=spec, progress=True)
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log file
        flow_failed(f"run {spec.name!r}", exc, uri, before, "run the same spec again")
    print_summary(summary)
    return summary


@app.command("run")
def run_cmd(spec_path: str = typer.Argument(..., metavar="SPEC.yaml")) -> None:
    """Run a pipeline spec end to end (ingest, simulate, adapt, restore, score, export)."""
    from restoreflow.spec import RunSpec, SpecError

    try:
        spec = RunSpec.from_yaml(spec_path)
    except SpecError as exc:
        fail(str(exc))
    _run_spec(spec, "run")


@app.command("rerun")
def rerun_cmd(
    manifest: str = typer.Argument(..., help="A run manifest (runs/<id>/manifest.json)"),
    store: str = typer.Option(None, "--store", help="Run into this store instead"),
) -> None:
    """Run the spec recorded in a manifest again (bit-identical outputs on the same device)."""
    import json

    from restoreflow.spec import RunSpec, SpecError

    try:
        from restoreflow.compat import spec_of_manifest

        data = json.loads(open(manifest, encoding="utf-8").read())
        spec = RunSpec.from_dict({**spec_of_manifest(data), **({"store": store} if store
                                                                else {})})
        # manifests record absolute paths; those of older ones (and --store) are taken
        # against the current directory, and recorded absolute in the new manifest
        spec = spec.resolved(os.getcwd(), degradation_files=False)
    except (OSError, ValueError, KeyError, TypeError, SpecError) as exc:
        fail(f"{manifest}: not a run manifest ({error_line(exc)})")
    _run_spec(spec, "rerun")


@app.command("restore")
def restore_cmd(
    degradation: str = opt.DEGRADATION,
    store: str = typer.Option(None, "--store", help=STORE_HELP),
    sampler: SamplerName = opt.SAMPLER,
    steps: int = opt.STEPS,
    seed: int = opt.SEED,
    collection: str = typer.Option("degraded", "--collection", help="Collection holding y"),
    out: str = typer.Option("restored", "--out", help="Output collection"),
    samples_: int = opt.SAMPLES,
    adapt: bool = opt.ADAPT,
    neighbours: int = opt.NEIGHBOURS,
    adapt_steps: int = opt.ADAPT_STEPS,
    prior: str = opt.PRIOR,
    option: list[str] = opt.OPTION,
) -> None:
    """Restore a degraded collection (one model task per image; reruns skip done images)."""
    cfg, ts = _restore_verb_setup(store, collection, degradation, prior, seed, sampler, steps,
                                  samples_, option, adapt, neighbours, adapt_steps)
    if adapt:
        from restoreflow.stages.adapt import stored_index

        try:
            stored_index(ts, cfg.index)
        except ValueError as exc:
            fail(f"--adapt: {exc}")
    log_to_file("restore")
    before = image_names(ts.uri)
    from restoreflow.flows.restore import restore_flow

    try:
        res = on_dask(restore_flow)(store=ts.uri, cfg=cfg, y_collection=collection, out=out,
                                     progress=True)
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log file
        flow_failed("restore", exc, ts.uri, before, "run the same command again")
    typer.echo(f"{out}: {len(res['restored'])} restored, {len(res['skipped'])} already done")
    typer.echo(bounds_line(res))


@app.command("score")
def score_cmd(
    degradation: str = opt.DEGRADATION,
    store: str = typer.Option(None, "--store", help=STORE_HELP),
    sampler: SamplerName = opt.SAMPLER,
    steps: int = opt.STEPS,
    seed: int = opt.SEED,
    out: str = typer.Option("restored", "--out", help="Collection of the restorations"),
    samples_: int = opt.SAMPLES,
    adapt: bool = opt.ADAPT,
    neighbours: int = opt.NEIGHBOURS,
    adapt_steps: int = opt.ADAPT_STEPS,
    prior: str = opt.PRIOR,
    option: list[str] = opt.OPTION,
) -> None:
    """Score restored images against the calibration of their settings (restores nothing;
    the flags name the settings, as restore's)."""
    cfg, ts = _restore_verb_setup(store, out, degradation, prior, seed, sampler, steps,
                                  samples_, option, adapt, neighbours, adapt_steps)
    log_to_file("score")
    before = image_names(ts.uri)
    from restoreflow.flows.restore import score_flow

    try:
        res = on_dask(score_flow)(store=ts.uri, cfg=cfg, out=out)
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log file
        flow_failed("score", exc, ts.uri, before, "run the same command again")
    typer.echo(bounds_line(res))


def bounds_line(res: dict) -> str:
    """One line: the restorations scored against the calibration of their settings (their
    bounds are in the report), or why they have no bounds."""
    if res.get("calibration"):
        return (f"bounds: {res['scored']} image(s) scored against calibration "
                f"{res['calibration']} (see 'restoreflow report')")
    return f"bounds: none ({res.get('note') or 'no calibration'})"


def _restore_verb_setup(store, collection, degradation, prior, seed, sampler, steps, samples_,
                        option, adapt, neighbours, adapt_steps):
    """(settings, opened store) of the restore and score verbs' flags, checked before any
    work: the settings, the prior's adaptability, the store, its ``collection``."""
    from restoreflow.preflight import check_adaptable, check_store

    cfg, settings = _restore_settings(
        degradation, prior, seed=seed, restore=restore_fields(sampler, steps, samples_, option),
        adapt={"enabled": adapt, "neighbours": neighbours, "steps": adapt_steps})
    run_preflight(check_adaptable, "--adapt", adapt, prior or settings.prior)
    run_preflight(check_store, "--store" if store else "RESTOREFLOW_STORE",
                  store or settings.store, settings)
    ts = open_cli_store(store)
    need_images(ts, given=store)
    if collection not in ts.collections():
        no_collection(ts, collection)
    return cfg, ts


def _restore_settings(degradation: str, prior: str | None, **fields):
    """(settings, process settings) of restore's and calibrate's flags: the validated
    RestoreConfig, its degradation files and prior checked, each failure one line."""
    from restoreflow.preflight import check_degradation_files, check_prior
    from restoreflow.settings import get_settings
    from restoreflow.spec import DegradationSpec, SpecError
    from restoreflow.stages.config import RestoreConfig

    try:
        spec = DegradationSpec.parse(degradation)
    except SpecError as exc:
        fail(str(exc))
    cfg = validated_model(RestoreConfig, degradation=spec.text, prior=prior, **fields)
    settings = get_settings()
    run_preflight(check_degradation_files, "--degradation", spec.text)
    run_preflight(check_prior, "--prior" if prior else "RESTOREFLOW_PRIOR" if settings.prior
                  else "the default prior", prior or settings.prior)
    return cfg, settings


@app.command("calibrate")
def calibrate_cmd(
    clean: list[str] = typer.Option(..., "--clean", help="Clean calibration images (sources)"),
    degradation: str = opt.DEGRADATION,
    store: str = typer.Option(None, "--store", help=STORE_HELP),
    sampler: SamplerName = opt.SAMPLER,
    steps: int = opt.STEPS,
    samples_: int = opt.SAMPLES,
    alpha: float = typer.Option(None, "--alpha", min=0.001, max=0.999,
                                help="Miscoverage of the bounds", show_default="0.1"),
    pixel_epsilon: float = typer.Option(
        None, "--pixel-epsilon", min=0.001, max=0.999,
        help="Expected fraction of pixels outside their interval", show_default="0.1"),
    pixel_delta: float = typer.Option(
        None, "--pixel-delta", min=0.001, max=0.999,
        help="Probability that the pixel guarantee fails", show_default="0.1"),
    group_by: str = typer.Option(
        "image", "--group-by", help="Calibration sources: image, folder (crops of one "
        "photo in one folder) or metadata:KEY (e.g. metadata:OBJECT)"),
    pixel_scale: str = typer.Option(
        "local", "--pixel-scale", help="Per-pixel intervals widened by a multiple of the "
        "samples' spread around the pixel and over the image (local), of their spread at "
        "the pixel (spread) or by a constant (constant)"),
    pixel_bound: str = typer.Option(
        "wsr", "--pixel-bound", help="Risk bound certifying the per-pixel intervals: wsr "
        "(Waudby-Smith-Ramdas, adapts to the data: narrower) or hb (Hoeffding-Bentkus)"),
    method: str = typer.Option(
        "full", "--method", help="PSNR/SSIM bound: full (full conformal ridge on every "
        "source), residual or cqr (split conformal: half the sources fit, half calibrate)"),
    prior: str = opt.PRIOR,
    option: list[str] = opt.OPTION,
) -> None:
    """Calibrate conformal PSNR/SSIM bounds for these restore settings."""
    from restoreflow.preflight import check_calibration_size, check_sources, check_store
    from restoreflow.spec import CalibrationOptions

    cfg, settings = _restore_settings(
        degradation, prior, restore=restore_fields(sampler, steps, samples_, option))
    given = {"alpha": alpha, "pixel_epsilon": pixel_epsilon, "pixel_delta": pixel_delta}
    calibration = validated_model(CalibrationOptions, clean=clean, group_by=group_by,
                                  pixel_scale=pixel_scale, pixel_bound=pixel_bound,
                                  method=method,
                                  **{k: v for k, v in given.items() if v is not None})
    run_preflight(check_sources, "--clean", clean, settings, False)
    names = run_preflight(check_calibration_size, "--clean", clean, settings,
                          calibration.alpha, calibration.group_by, calibration.method)
    pixel_warning = pixel_outlook(cfg, calibration, settings, names)
    if pixel_warning:
        typer.echo(f"warning: {pixel_warning}", err=True)
    run_preflight(check_store, "--store" if store else "RESTOREFLOW_STORE",
               store or settings.store, settings)
    ts = open_cli_store(store)
    log_to_file("calibrate")
    before = image_names(ts.uri)
    from restoreflow.flows.pipeline import calibrate_flow

    try:
        res = on_dask(calibrate_flow)(store=ts.uri, cfg=cfg, calibration=calibration,
                                       progress=True)
    except Exception as exc:  # noqa: BLE001 - the traceback goes to the log file
        flow_failed("calibrate", exc, ts.uri, before, "run the same command again")
    typer.echo(calibration_line(res))
    typer.echo(pixel_line(res))
    if res.get("scored"):
        typer.echo(f"bounds: {res['scored']} restored image(s) of these settings scored "
                   "(see 'restoreflow report')")
    for w in res.get("warnings") or []:
        typer.echo(f"warning: {w}", err=True)


def pixel_outlook(cfg, calibration, settings, names: list[str] | None = None) -> str | None:
    """Before anything is restored: why this calibration will give no per-pixel
    intervals (one posterior sample, or fewer sources than the pixel guarantee needs),
    and what to change; None when it can. ``names``: each calibration file's source,
    when the caller has listed them already."""
    from restoreflow.preflight import calibration_sources
    from restoreflow.quality.rcps import min_sources_for

    c = calibration
    if cfg.restore.posterior_samples < 2:
        return "no per-pixel intervals with --samples 1 (give restore and calibrate --samples 4)"
    if names is None:
        names = calibration_sources(c.clean, settings, c.group_by)
    need = min_sources_for(c.pixel_epsilon, c.pixel_delta, c.pixel_bound)
    if names is None or len(set(names)) >= need:
        return None
    return (f"per-pixel intervals at epsilon={c.pixel_epsilon:g}, delta={c.pixel_delta:g} "
            f"need at least {need} calibration sources; these images make "
            f"{len(set(names))}: there will be none (add sources or raise --pixel-epsilon)")


def pixel_line(res: dict) -> str:
    """One line: the per-pixel intervals the calibration certified, or why there are none
    and what to change."""
    px = res.get("pixel")
    if not px:
        return f"per-pixel intervals: none ({(res.get('pixel_note') or 'not fitted')})"
    width = f", mean width {px['mean_width']:.3f}" if px.get("mean_width") is not None else ""
    return (f"per-pixel intervals: lambda={px['lam']:.3g}{width}; expected fraction of pixels "
            f"outside <= {px['epsilon']:g} over new images, with probability "
            f"{1 - px['delta']:.0%}")


def calibration_line(res: dict) -> str:
    """One line: the calibration's size and its out-of-sample coverage (each source's
    images bounded by a calibration without that source), never in-sample figures."""
    from restoreflow.storage.layout import COVERAGE_METHOD, out_of_sample_coverage

    cov = out_of_sample_coverage(res) or {}
    fig = ", ".join(f"{t.upper()} {100 * cov[t]:.1f}%" for t in ("psnr", "ssim")
                    if cov.get(t) is not None) or "n/a"
    return (f"calibration {res['settings_hash']}: {res['n']} images from "
            f"{res.get('sources', res['n'])} sources, alpha={res['alpha']}; out-of-sample "
            f"coverage ({COVERAGE_METHOD}) {fig} (target {100 * (1 - res['alpha']):.0f}%)")


@app.command("report")
def report_cmd(
    store: str = typer.Option(None, "--store", help=STORE_HELP),
    run: str = typer.Option(None, "--run", help="Run id (default: the latest)"),
    out: str = typer.Option("report.html", "--out", help="Output HTML file"),
) -> None:
    """Write a static, self-contained HTML report of a run."""
    from restoreflow.report.html import build_report

    ts = open_cli_store(store)
    need_images(ts, given=store)
    try:
        path = build_report(ts, out, run)
    except ValueError as exc:  # --run names no run of this store
        fail(f"--run {run}: {exc}" if run else str(exc))
    typer.echo(f"report: {path}")


@app.command("demo")
def demo_cmd(
    workdir: str = typer.Option("restoreflow-demo", "--dir", help="Working directory"),
) -> None:
    """The main job on embedded defaults: bundled photos, blur+noise, restore, calibrated
    bounds, report (local store, in-process Prefect, local Dask cluster)."""
    from restoreflow.demo import prepare_demo
    from restoreflow.spec import RunSpec

    spec = RunSpec.from_dict(prepare_demo(workdir))
    typer.echo(f"demo: {len(spec.sources)} source folder(s), store {spec.store}, "
               f"{spec.degradation}")
    _run_spec(spec, "demo")


@app.command("serve")
def serve_cmd(
    spec_path: str = typer.Argument(..., metavar="SPEC.yaml"),
    cron: str = typer.Option("0 2 * * *", "--cron", help="When to run (cron, UTC)"),
    name: str = typer.Option(None, "--name", help="Deployment name (default: the spec's)"),
) -> None:
    """Serve the pipeline on a schedule from this host (Prefect deployment + runner).

    Needs a Prefect server (PREFECT_API_URL), e.g. `prefect server start --host 127.0.0.1`.
    """
    from restoreflow.errors import pydantic_message
    from restoreflow.spec import RunSpec, SpecError

    try:
        spec = RunSpec.from_yaml(spec_path)
    except SpecError as exc:
        fail(str(exc))
    try:
        from prefect.client.schemas.schedules import CronSchedule

        CronSchedule(cron=cron)
    except ValueError as exc:  # pydantic's ValidationError is one; its first message
        errors = getattr(exc, "errors", None)
        fail(f"--cron {cron!r}: {pydantic_message(errors()[0]) if errors else exc}")
    if not (os.environ.get("PREFECT_API_URL") or profile_settings().get("PREFECT_API_URL")):
        fail("serve: no Prefect server: PREFECT_API_URL is not set, and a schedule kept by "
             "this process's ephemeral API would die with it (start one with 'prefect server "
             "start --host 127.0.0.1' and set PREFECT_API_URL=http://127.0.0.1:4200/api)")
    from restoreflow.flows.pipeline import pipeline_flow

    typer.echo(f"serving {name or spec.name} on cron {cron!r} (Ctrl-C stops)")
    on_dask(pipeline_flow).serve(name=name or spec.name, cron=cron,
                                  parameters={"spec": spec.model_dump(mode="json")})
