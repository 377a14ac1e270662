"""Expand command-line sources (files, directories, globs, s3:// prefixes) into items.

Nothing here raises for a bad path: a source that cannot be listed or read becomes a
:class:`SourceItem` with an ``error``, and the batch goes on.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from restoreflow.settings import Settings
from restoreflow.storage.readers import IMAGE_EXTENSIONS

GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class SourceItem:
    """One file to ingest. ``uri`` is safe to print (credentials stripped)."""

    uri: str
    name: str
    kind: str  # "file" or "s3"
    size: int | None = None
    error: str | None = None


def strip_credentials(uri: str) -> str:
    """Remove ``user:password@`` from a URI (``s3://key:secret@bucket/x`` -> ``s3://bucket/x``)."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def printable(text: str) -> str:
    """``text`` safe to print, log and store as JSON, on one line: bytes of a file name
    that are not UTF-8 (surrogate escapes) become ``\\xNN``, control characters
    (newlines, NUL, ...) become escapes like ``\\n``. Used for the names and sources that
    ingest reports and records; the file itself is still opened by its real name."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates that are not escaped bytes
        raw = text.encode("utf-8", "backslashreplace")
    s = raw.decode("utf-8", "backslashreplace")
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


def has_image_extension(name: str) -> bool:
    return PurePosixPath(name.replace("\\", "/")).suffix.lower() in IMAGE_EXTENSIONS


def s3_filesystem(settings: Settings):
    import s3fs

    return s3fs.S3FileSystem(use_listings_cache=False, **settings.storage_options())


def _local_item(path: str) -> SourceItem:
    name = os.path.basename(path.rstrip("/")) or path
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return SourceItem(path, name, "file", error="broken symbolic link")
        return SourceItem(path, name, "file", error="no such file or directory")
    except OSError as exc:
        return SourceItem(path, name, "file", error=f"cannot access: {exc.strerror or exc}")
    if stat.S_ISDIR(st.st_mode):
        return SourceItem(path, name, "file", error="is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        return SourceItem(path, name, "file", error="not a regular file")
    return SourceItem(path, name, "file", size=st.st_size)


def _walk(root: str) -> list[SourceItem]:
    """Image files under ``root``, recursively, sorted; symlinked directories are not
    followed (no loops), symlinked files are."""
    errors: list[SourceItem] = []

    def onerror(exc: OSError) -> None:
        p = getattr(exc, "filename", None) or root
        errors.append(SourceItem(str(p), os.path.basename(str(p)), "file",
                                 error=f"cannot list directory: {exc.strerror or exc}"))

    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        dirnames.sort()
        for f in filenames:
            if has_image_extension(f):
                found.append(os.path.join(dirpath, f))
    return [_local_item(p) for p in sorted(found)] + errors


def _expand_s3(uri: str, settings: Settings) -> list[SourceItem]:
    shown = strip_credentials(uri)
    path = shown[len("s3://"):].strip("/")
    name = PurePosixPath(path).name
    if not path:
        return [SourceItem(shown, shown, "s3", error="no bucket in S3 URI")]
    try:
        fs = s3_filesystem(settings)
        if any(c in path for c in GLOB_CHARS):
            keys = sorted(fs.glob(path))
            keys = [k for k in keys if has_image_extension(k)]
            if not keys:
                return [SourceItem(shown, name, "s3", error="no objects match the pattern")]
            infos = [(k, fs.info(k)) for k in keys]
        else:
            info = None
            try:
                info = fs.info(path)
            except FileNotFoundError:
                return [SourceItem(shown, name, "s3", error="no such object or prefix")]
            if info.get("type") == "file":
                return [SourceItem(shown, name, "s3", size=info.get("size"))]
            listing = fs.find(path, detail=True)
            infos = sorted(
                (k, v) for k, v in listing.items()
                if v.get("type") == "file" and has_image_extension(k)
            )
    except Exception as exc:  # noqa: BLE001 - listing failure is reported per source
        return [SourceItem(shown, name, "s3",
                           error=f"cannot list: {type(exc).__name__}: {exc}")]
    return [
        SourceItem(f"s3://{k}", PurePosixPath(k).name, "s3", size=v.get("size"))
        for k, v in infos
    ]


def _glob_regex(pattern: str) -> re.Pattern:
    """Regex for a glob over "/"-separated paths: ``*``, ``?``, ``[...]`` stay within one
    path component, a ``**`` component matches zero or more directories."""
    out = []
    parts = pattern.split("/")
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]*/)*")
            continue
        i = 0
        while i < len(part):
            c = part[i]
            if c == "*":
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
            elif c == "[" and part.find("]", i + 2) != -1:
                j = part.find("]", i + 2)
                body = part[i + 1:j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
            else:
                out.append(re.escape(c))
            i += 1
        if not last:
            out.append("/")
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def expand_glob(pattern: str) -> list[str]:
    """Sorted matches of a glob. Patterns with ``**`` are matched while walking the
    directory tree WITHOUT following symlinked directories (plain ``glob`` follows them
    and loops); files under the walk are matched against the whole pattern."""
    if "**" not in pattern:
        return sorted(glob.glob(pattern))
    parts = pattern.split(os.sep)
    k = next(i for i, p in enumerate(parts) if any(c in p for c in GLOB_CHARS))
    base = os.sep.join(parts[:k]) or ("/" if pattern.startswith("/") else ".")
    rx = _glob_regex("/".join(parts[k:]))
    found = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, base)
        for f in filenames:
            rel = f if rel_dir == "." else f"{rel_dir}/{f}".replace(os.sep, "/")
            if rx.match(rel):
                found.append(os.path.join(dirpath, f))
    return sorted(found)


def expand_sources(sources: list[str], settings: Settings) -> list[SourceItem]:
    """Expand each source, in order, into items; duplicates (same path) are kept once.

    - ``s3://bucket/prefix``: every object under the prefix with an image extension
      (or the single object), sorted; globs in the key are allowed.
    - a directory: every file with an image extension below it, sorted.
    - a glob (``*``, ``?``, ``[``) that is not an existing path: its matches, sorted
      (``**`` recurses); directories among the matches are walked.
    - a file: itself, whatever its extension (the reader then says why it is rejected).
    """
    items: list[SourceItem] = []
    seen: set[str] = set()

    def add(it: SourceItem) -> None:
        key = it.uri if it.kind == "s3" or it.error else os.path.realpath(it.uri)
        if key not in seen:
            seen.add(key)
            items.append(it)

    for src in sources:
        src = str(src)
        if src.startswith("s3://"):
            for it in _expand_s3(src, settings):
                add(it)
            continue
        path = src[len("file://"):] if src.startswith("file://") else src
        path = os.path.expanduser(path)
        if os.path.isdir(path):
            for it in _walk(path):
                add(it)
        elif not os.path.lexists(path) and any(c in path for c in GLOB_CHARS):
            matches = expand_glob(path)
            if not matches:
                add(SourceItem(src, os.path.basename(path), "file",
                               error="no files match the pattern"))
            for m in matches:
                if os.path.isdir(m):
                    for it in _walk(m):
                        add(it)
                elif has_image_extension(m):
                    add(_local_item(m))
        else:
            add(_local_item(path))
    return items


def read_source(item: SourceItem, settings: Settings, fs=None) -> bytes:
    """The bytes of one item. Raises OSError (with a readable message) on failure."""
    if item.error:
        raise OSError(item.error)
    if item.kind == "s3":
        fs = fs or s3_filesystem(settings)
        return fs.cat_file(item.uri[len("s3://"):])
    with open(item.uri, "rb") as f:
        return f.read()
