"""Files written for the user (exports, tables, manifests, adapters) get the permissions
of a normal write, 0o666 & ~umask, not mkstemp's 0o600 (issue 19, item 1)."""

from __future__ import annotations

import os
import stat

import pytest
from storage_files import rng_image

from restoreflow.storage.export import export
from restoreflow.storage.ingest import ingest_array
from restoreflow.storage.writers import write_atomic


@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_exports_follow_the_umask(make_store, tmp_path, umask):
    store = make_store("local")
    ingest_array(store, rng_image((12, 14), "uint16"), "a.png")
    expected = 0o666 & ~umask
    for fmt in ("png", "tiff", "fits"):
        (path,) = export(store, "input", fmt, tmp_path / fmt)
        assert _mode(path) == expected, (fmt, oct(_mode(path)))
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_store_small_files_follow_the_umask(make_store, umask):
    store = make_store("local")
    store.write_table("runs", [{"run_id": "r1"}])
    store.put_bytes("runs/r1/manifest.json", b"{}")
    store.put_bytes("adapters/k/adapter_model.safetensors", b"\0" * 8)
    expected = 0o666 & ~umask
    root = store._full("")
    for rel in ("tables/runs.json", "runs/r1/manifest.json",
                "adapters/k/adapter_model.safetensors"):
        assert _mode(os.path.join(root, rel)) == expected, rel
    # overwriting keeps a normal file's mode, and leaves no temp file behind
    store.write_table("runs", [{"run_id": "r2"}])
    assert _mode(os.path.join(root, "tables/runs.json")) == expected
    assert os.listdir(os.path.join(root, "tables")) == ["runs.json"]


def test_write_atomic_failure_leaves_nothing(tmp_path, umask):
    target = tmp_path / "x.bin"
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    write_atomic(target, b"ok")
    assert target.read_bytes() == b"ok" and _mode(target) == 0o666 & ~umask


def test_report_follows_the_umask(make_store, tmp_path, umask):
    from restoreflow.report import build_report

    store = make_store("local")
    ingest_array(store, rng_image((16, 16), "uint8"), "a.png")
    path = build_report(store, tmp_path / "r" / "report.html")
    assert _mode(path) == 0o666 & ~umask
    assert os.listdir(path.parent) == ["report.html"]
