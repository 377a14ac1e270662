"""Checks of a job's configuration before any work (issue 20 item 3).

A verb checks what it will need before it creates the store or starts a flow: the
sources exist (a local path, a glob with matches, a directory holding an image file, an
S3 prefix that lists something), the store can be written (local: the nearest existing
directory on its path is writable; S3: the bucket answers a one-key listing with these
credentials, within a short timeout), the prior loads from safetensors (the checks of
:mod:`restoreflow.models.prior` plus the safetensors headers, without loading the
weights), the degradation's files (PSF, mask) load, and the output locations can be
written. Each check raises :class:`PreflightError` naming the field and the reason on one
line; nothing is created. Local checks take milliseconds (one directory walk stops at the
first image file); an S3 check is one request.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Sequence
from pathlib import Path

from restoreflow.settings import Settings
from restoreflow.stages.config import chosen_prior
from restoreflow.storage.sources import (
    GLOB_CHARS,
    expand_glob,
    has_image_extension,
    printable,
    strip_credentials,
)

__all__ = ["PreflightError", "check_adaptable", "check_calibration_size",
           "check_degradation_files", "check_out_dir", "check_prior", "check_report",
           "check_run", "check_sources", "check_store"]

# a preflight request must fail fast: no botocore retries, short timeouts
S3_CONFIG = {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 1}}


class PreflightError(ValueError):
    """A configuration that cannot work: ``field: reason`` on one line."""

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, " ".join(str(reason).split())
        super().__init__(f"{field}: {self.reason}")


def _shown(path: str) -> str:
    """A local path as the user wrote it, with its absolute form when it is relative
    (a relative path is taken against the current directory)."""
    p = printable(path)
    if not path or os.path.isabs(path) or path.startswith(("~", "file://")):
        return p
    return f"{p} (= {printable(os.path.abspath(path))})"


def _local(path: str) -> str:
    path = path[len("file://"):] if path.startswith("file://") else path
    return os.path.expanduser(path)


# ---- S3 -------------------------------------------------------------------------------


def s3_filesystem(settings: Settings):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                           config_kwargs=S3_CONFIG, **settings.storage_options())
    fs.retries = 1  # s3fs's own retry loop (with back-off) on connection errors
    return fs


def _s3_reason(exc: BaseException, bucket: str, settings: Settings) -> str:
    where = settings.s3_endpoint_url or "AWS S3"
    if isinstance(exc, FileNotFoundError):
        return f"bucket {bucket!r} does not exist at {where}"
    if isinstance(exc, PermissionError):
        return (f"access to bucket {bucket!r} denied at {where} (check AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
    msg = " ".join(str(exc).split())[:300]
    return f"cannot reach S3 at {where}: {type(exc).__name__}: {msg}"


def _split_s3(field: str, uri: str, no_bucket: str) -> tuple[str, str, str]:
    """(bucket, key, the URI as shown); ``no_bucket`` is the error without a bucket."""
    shown = strip_credentials(uri)
    bucket, _, key = shown[len("s3://"):].strip("/").partition("/")
    if not bucket:
        raise PreflightError(field, f"{shown}: {no_bucket}")
    return bucket, key, shown


def _s3_source(field: str, uri: str, settings: Settings) -> None:
    bucket, key, shown = _split_s3(field, uri, "no bucket in S3 URI")
    fs = s3_filesystem(settings)
    try:
        if any(c in key for c in GLOB_CHARS):
            found = [k for k in fs.glob(f"{bucket}/{key}") if has_image_extension(k)]
            if not found:
                raise PreflightError(field, f"{shown}: no objects match the pattern")
            return
        prefix = key.rstrip("/") + "/" if key else ""
        res = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if res.get("KeyCount", len(res.get("Contents", []))):
            return
        if key:
            try:
                fs.call_s3("head_object", Bucket=bucket, Key=key.rstrip("/"))
                return
            except FileNotFoundError:
                pass
        raise PreflightError(field, f"{shown}: no such object or prefix"
                             + ("" if key else " (the bucket is empty)"))
    except PreflightError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the S3 stack is the reason
        raise PreflightError(field, f"{shown}: {_s3_reason(exc, bucket, settings)}") from None


def _s3_store(field: str, uri: str, settings: Settings) -> None:
    bucket, key, shown = _split_s3(field, uri, "an S3 store needs s3://bucket[/prefix]")
    fs = s3_filesystem(settings)
    try:
        fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key.rstrip("/") + "/" if key else "",
                   MaxKeys=1)
    except Exception as exc:  # noqa: BLE001 - any failure of the S3 stack is the reason
        raise PreflightError(field, f"{shown}: {_s3_reason(exc, bucket, settings)}") from None


# ---- local ----------------------------------------------------------------------------


def _first_image(root: str) -> tuple[str | None, str | None]:
    """(the first image file found under ``root``, or None; an error listing ``root``)."""
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append,
                                                followlinks=False):
        dirnames.sort()
        for f in sorted(filenames):
            if has_image_extension(f):
                return os.path.join(dirpath, f), None
    top = [e for e in errors if os.path.abspath(str(e.filename or root)) == os.path.abspath(root)]
    return None, (f"cannot list directory: {top[0].strerror}" if top else None)


def _local_source(field: str, src: str) -> None:
    path = _local(src)
    if os.path.isdir(path):
        found, err = _first_image(path)
        if found is None:
            from restoreflow.storage.readers import IMAGE_EXTENSIONS

            raise PreflightError(field, f"{_shown(src)}: " + (err or (
                "directory holds no image files (" + ", ".join(sorted(IMAGE_EXTENSIONS))
                + ")")))
        return
    if os.path.lexists(path):
        return  # a file (or a link, a fifo...): ingest reads it or rejects it by name
    if any(c in path for c in GLOB_CHARS):
        if not any(os.path.isdir(m) or has_image_extension(m) for m in expand_glob(path)):
            raise PreflightError(field, f"{_shown(src)}: no image files match the pattern")
        return
    raise PreflightError(field, f"{_shown(src)}: no such file or directory")


def _nearest_existing(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def _writable_location(field: str, shown: str, path: str, want: str) -> None:
    """``path`` (absent, or an existing ``want`` = "dir"/"file") can be created or
    written: the nearest existing directory on the way is writable."""
    try:
        _check_writable(field, shown, path, want)
    except OSError as exc:  # e.g. a directory on the way that cannot be searched
        raise PreflightError(field, f"{shown}: {exc.strerror or exc}") from None


def _check_writable(field: str, shown: str, path: str, want: str) -> None:
    if os.path.lexists(path):
        if os.path.islink(path) and not os.path.exists(path):
            raise PreflightError(field, f"{shown}: a broken symbolic link")
        st = os.stat(path)
        if want == "dir" and not stat.S_ISDIR(st.st_mode):
            raise PreflightError(field, f"{shown}: a regular file, not a directory"
                                 if stat.S_ISREG(st.st_mode) else f"{shown}: not a directory")
        if want == "file" and stat.S_ISDIR(st.st_mode):
            raise PreflightError(field, f"{shown}: a directory, not a file")
        target = path if want == "dir" else os.path.dirname(os.path.abspath(path))
        if not os.access(target, os.W_OK | os.X_OK):
            raise PreflightError(field, f"{shown}: {printable(target)} is not writable")
        if want == "file" and not os.access(path, os.W_OK):
            raise PreflightError(field, f"{shown}: the file is not writable")
        return
    near = _nearest_existing(path)
    if os.path.islink(near) and not os.path.exists(near):
        raise PreflightError(field, f"{shown}: {printable(near)} is a broken symbolic link")
    if not os.path.isdir(near):
        kind = "a regular file" if os.path.isfile(near) else "not a directory"
        raise PreflightError(field, f"{shown}: cannot create it under {printable(near)}, "
                             f"which is {kind}")
    if not os.access(near, os.W_OK | os.X_OK):
        raise PreflightError(field, f"{shown}: cannot create it: {printable(near)} is not "
                             "writable")


def _local_store(field: str, uri: str, settings: Settings) -> None:
    from restoreflow.storage.store import STORE_ROOT_ENTRY, TileStore

    root = os.path.abspath(_local(uri))
    shown = _shown(uri)
    _writable_location(field, shown, root, "dir")
    if not os.path.isdir(root):
        return
    if os.path.isfile(os.path.join(root, "zarr.json")):
        try:  # reads the root attrs: refuses a zarr hierarchy that is not a store
            TileStore(root, settings)
        except (ValueError, OSError) as exc:
            raise PreflightError(field, f"{shown}: {exc}") from None
        return
    try:
        foreign = [e for e in os.listdir(root) if not STORE_ROOT_ENTRY.match(e)]
    except OSError as exc:
        raise PreflightError(field, f"{shown}: cannot list: {exc.strerror}") from None
    if foreign:
        raise PreflightError(field, f"{shown}: exists and is not a restoreflow store (no "
                             "zarr.json); choose an empty or new location")


# ---- public checks --------------------------------------------------------------------


def _is_s3(field: str, uri: str, what: str) -> bool:
    """True for s3:// URIs, False for paths and file://; other schemes are refused."""
    if "://" in uri and not uri.startswith(("s3://", "file://")):
        raise PreflightError(field, f"{printable(uri)}: only local paths, file:// and s3:// "
                             f"{what} are supported")
    return uri.startswith("s3://")


def check_sources(field: str, sources: Sequence[str], settings: Settings,
                  indexed: bool = True) -> None:
    """Every source exists and can hold images (see the module docstring). ``field``
    names the list; with ``indexed`` each source is named ``field[k]``."""
    if not sources:
        raise PreflightError(field, "no sources given")
    for k, src in enumerate(sources):
        name = f"{field}[{k}]" if indexed else field
        src = str(src)
        if _is_s3(name, src, "sources"):
            _s3_source(name, src, settings)
        else:
            _local_source(name, src)


def check_calibration_size(field: str, sources: Sequence[str], settings: Settings,
                           alpha: float, group_by: str, method: str = "full"
                           ) -> list[str] | None:
    """The calibration images make enough sources for a bound at ``alpha`` (counted from
    the file listing: each file, or each folder with ``group_by: folder``; metadata
    groups are counted once ingested), before anything is ingested or restored. Returns
    each file's source (:func:`calibration_sources`)."""
    from restoreflow.stages.calibrate import require_sources

    names = calibration_sources(sources, settings, group_by)
    if names is not None:
        try:
            require_sources(names, alpha, group_by, method)
        except ValueError as exc:
            raise PreflightError(field, str(exc)) from None
    return names


def calibration_sources(sources: Sequence[str], settings: Settings,
                        group_by: str) -> list[str] | None:
    """The source of each calibration file, from the file listing (None for metadata
    groups, known once the files are ingested)."""
    from restoreflow.stages.calibrate import source_of
    from restoreflow.storage.sources import expand_sources

    if group_by.startswith("metadata:"):
        return None
    items = [i for i in expand_sources(list(sources), settings) if i.error is None]
    return [source_of({"source": i.uri}, group_by) for i in items]


def check_store(field: str, uri: str, settings: Settings) -> None:
    """The store can be opened and written: a local path whose nearest existing
    directory is writable (an existing store, or an empty or new location), or an S3
    bucket that answers a listing with these credentials."""
    if not uri:
        raise PreflightError(field, "empty store path")
    if _is_s3(field, uri, "stores"):
        _s3_store(field, uri, settings)
    else:
        _local_store(field, uri, settings)


def check_out_dir(field: str, path: str) -> None:
    """An output directory (export) that exists or can be created, writable."""
    if "://" in path and not path.startswith("file://"):
        return  # a remote destination: its writer reports failures
    _writable_location(field, _shown(path), _local(path), "dir")


def check_report(field: str, path: str) -> None:
    """A report file that can be written (its directory exists or can be created)."""
    _writable_location(field, _shown(path), _local(path), "file")


def _safetensors_header(path: Path) -> str | None:
    """Why ``path`` is not a readable safetensors file (its header), or None."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "truncated (no header)"
            (n,) = struct.unpack("<Q", head)
            size = path.stat().st_size
            if n > size - 8 or n > 100_000_000:
                return f"header length {n} exceeds the file size {size}"
            json.loads(f.read(n))
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    except ValueError:
        return "header is not valid JSON"
    return None


def check_prior(field: str, ref: str | None) -> None:
    """The prior ``ref`` names (:mod:`restoreflow.models.priors`; None: the default) is
    there and loads safely: a named prior's weights (the FFDNet file's sha256 checked),
    a denoiser weight file of a known architecture (read with ``weights_only``; pickled
    code refused), or a diffusers UNet directory / hub id with a readable config.json and
    safetensors weights (only their headers are read)."""
    from restoreflow.models import priors
    from restoreflow.models.denoiser import architecture_for, ffdnet_weights, read_state_dict
    from restoreflow.models.guided_diffusion import config_from_state_dict
    from restoreflow.models.prior import DEFAULT_PRIOR_DIR, ModelLoadError

    name = priors.canonical(ref)
    try:
        k = priors.kind(ref)
        if k in ("ffdnet", "hybrid"):
            ffdnet_weights()
        if k in ("denoiser file", "guided-diffusion file"):
            path = Path(name).expanduser()
            state = read_state_dict(path)
            if k == "guided-diffusion file":
                config_from_state_dict(state)
            else:
                architecture_for(path, state)
        if k in ("unet", "hybrid", "diffusers"):
            check_unet_dir(field, None if k != "diffusers" else name, DEFAULT_PRIOR_DIR)
    except ModelLoadError as exc:
        raise PreflightError(field, str(exc)) from None


def check_adaptable(field: str, enabled: bool, ref: str | None) -> None:
    """Adaptation (LoRA) is asked for a prior it applies to (a diffusion UNet)."""
    from restoreflow.models.prior import ModelLoadError
    from restoreflow.models.priors import adaptation_refusal

    try:
        why = adaptation_refusal(ref) if enabled else None
    except ModelLoadError as exc:  # an unreadable file: check_prior names it first
        raise PreflightError(field, str(exc)) from None
    if why:
        raise PreflightError(field, why)


def check_unet_dir(field: str, ref: str | None, default) -> None:
    """A diffusers UNet directory or hub id (None: ``default``) with a readable config.json
    and safetensors weights; pickled weights are refused; only headers are read."""
    from restoreflow.models.prior import (
        ModelLoadError,
        check_safetensors,
        resolve_dirs,
        resolve_model_path,
    )

    try:
        root = resolve_model_path(ref or default)
        unet_dir, sched = resolve_dirs(root)
        check_safetensors(unet_dir)
    except ModelLoadError as exc:
        raise PreflightError(field, str(exc)) from None
    except OSError as exc:
        raise PreflightError(field, f"{printable(str(ref))}: {exc.strerror or exc}") from None
    for cfg in (unet_dir / "config.json", sched):
        if cfg is None:
            continue
        try:
            json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PreflightError(field, f"{printable(str(cfg))}: not a readable JSON config "
                                 f"({type(exc).__name__})") from None
    for w in sorted(unet_dir.glob("*.safetensors")):
        why = _safetensors_header(w)
        if why:
            raise PreflightError(field, f"{printable(str(w))}: not a safetensors file ({why})")


def check_degradation_files(field: str, degradation: str) -> None:
    """The files a degradation reads (a kernel_blur PSF, an inpaint_mask mask) load
    and are valid (they are small: loading them is the check)."""
    from restoreflow.degradation import DegradationSpec
    from restoreflow.storage.operator_files import read_kernel, read_mask

    loaders = {"kernel_blur": read_kernel, "inpaint_mask": read_mask}
    for name, path in DegradationSpec.parse(degradation).files():
        try:
            if name in loaders:
                loaders[name](path)
            else:
                with open(path, "rb") as f:
                    f.read(1)
        except (OSError, ValueError) as exc:
            reason = ("no such file" if isinstance(exc, FileNotFoundError) else
                      exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
            raise PreflightError(field, f"{name} path {_shown(path)}: {reason}") from None


def check_run(spec, settings: Settings, where: str = "spec") -> None:
    """Every check of a run spec, cheapest first; the first failure is raised. Fields
    are named ``{where}.sources[0]``, ``{where}.prior``...; a store or prior that comes
    from the environment is named by its variable."""
    check_degradation_files(f"{where}.degradation", spec.degradation)
    check_sources(f"{where}.sources", spec.sources, settings)
    if spec.calibration is not None:
        c = spec.calibration
        check_sources(f"{where}.calibration.clean", c.clean, settings)
        check_calibration_size(f"{where}.calibration.clean", c.clean, settings, c.alpha,
                               c.group_by, c.method)
    if spec.adapt.enabled and spec.adapt.corpus:
        check_sources(f"{where}.adapt.corpus", spec.adapt.corpus, settings)
    prior = chosen_prior(spec.prior, settings)
    check_prior(f"{where}.prior" if spec.prior else
                "RESTOREFLOW_PRIOR" if prior else "the default prior", prior)
    check_adaptable(f"{where}.adapt.enabled", spec.adapt.enabled, prior)
    if spec.export is not None:
        check_out_dir(f"{where}.export.out", spec.export.out)
    if spec.report:
        check_report(f"{where}.report", spec.report)
    check_store(f"{where}.store" if spec.store else "RESTOREFLOW_STORE",
                spec.store or settings.store, settings)
