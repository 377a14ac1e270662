"""Ingest: incremental and content-addressed, bad files rejected by name, CLI exit codes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from storage_files import (
    fits_bytes,
    huge_png_header,
    jpeg_bytes,
    png_bytes,
    rng_image,
    smooth_image,
    tiff_bytes,
)
from typer.testing import CliRunner

from restoreflow.storage.ingest import (
    IngestRejected,
    content_id,
    ingest,
    ingest_array,
)


def _snapshot(store):
    """Every object of the store with its modification stamp and size."""
    if store.is_s3:
        store.fs.invalidate_cache()
        found = store.fs.find(store._root, detail=True)
        return {k: (str(v.get("LastModified")), v.get("ETag"), v.get("size"))
                for k, v in found.items()}
    out = {}
    for d, _, files in os.walk(store._root):
        for f in files:
            st = os.stat(os.path.join(d, f))
            out[os.path.join(d, f)] = (st.st_mtime_ns, st.st_size)
    return out


def _good_dir(path, n=3, seed=0):
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (path / f"img{seed}_{i}.png").write_bytes(png_bytes(smooth_image((70, 90, 3), seed + i)))
    return path


def test_second_run_writes_nothing(store, tmp_path):
    src = _good_dir(tmp_path / "photos", 3)
    first = ingest([str(src)], store, progress=False)
    assert first.counts == {"ingested": 3, "present": 0, "rejected": 0}
    before = _snapshot(store)
    assert any(k.endswith("zarr.json") for k in before)
    second = ingest([str(src)], store, progress=False)
    assert second.counts == {"ingested": 0, "present": 3, "rejected": 0}
    assert [r.image_id for r in second.present] == [r.image_id for r in first.ingested]
    assert _snapshot(store) == before  # no object added, rewritten or removed


def test_directory_that_gained_files_ingests_only_those(make_store, tmp_path, monkeypatch):
    from restoreflow.storage import ingest as ingest_mod

    store = make_store("local")
    src = _good_dir(tmp_path / "photos", 2)
    ingest([str(src)], store, progress=False)
    (src / "sub").mkdir()
    (src / "sub" / "new.tif").write_bytes(tiff_bytes(rng_image((40, 40), "uint16")))
    decoded = []
    real = ingest_mod.read_image
    monkeypatch.setattr(ingest_mod, "read_image",
                        lambda data, name, *a: decoded.append(name) or real(data, name, *a))
    report = ingest([str(src)], store, progress=False)
    assert report.counts == {"ingested": 1, "present": 2, "rejected": 0}
    assert decoded == ["new.tif"]  # present images were not even decoded
    assert len(store.image_ids("input")) == 3


def test_same_bytes_twice_in_one_batch(make_store, tmp_path):
    store = make_store("local")
    data = png_bytes(smooth_image((30, 30)))
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "copy-of-a.png").write_bytes(data)
    report = ingest([str(tmp_path / "a.png"), str(tmp_path / "copy-of-a.png")], store,
                    progress=False)
    assert report.counts == {"ingested": 1, "present": 1, "rejected": 0}
    assert "same content as" in report.present[0].reason


def test_writing_leftover_is_rewritten(store, tmp_path):
    arr = smooth_image((100, 130, 3), 7)
    data = png_bytes(arr)
    (tmp_path / "crash.png").write_bytes(data)
    iid = content_id(data)
    # a crashed run: metadata created, one garbage tile, never marked complete
    store.create_image("input", iid, (3, 100, 130), "uint8", {"name": "crash.png"})
    store.write_region("input", iid, np.full((3, 64, 64), 9, np.uint8), 0, 0)
    assert store.status("input", iid) == "writing"
    assert store.image_ids("input") == []
    report = ingest([str(tmp_path / "crash.png")], store, progress=False)
    assert report.counts["ingested"] == 1
    assert "rewrote an incomplete image" in report.rows[0].reason
    assert store.has("input", iid)
    np.testing.assert_array_equal(store.read("input", iid), np.moveaxis(arr, -1, 0))


def _bad_batch(root):
    """A directory mixing good files and every kind of bad one; returns expectations."""
    root.mkdir()
    good = smooth_image((64, 64, 3))
    (root / "good.png").write_bytes(png_bytes(good))
    (root / "good.jpg").write_bytes(jpeg_bytes(good))
    (root / "sky.fits").write_bytes(fits_bytes(rng_image((32, 32), "float32")))
    bad = {
        "corrupt.png": (png_bytes(good)[:200], "truncated"),
        "corrupt.jpg": (jpeg_bytes(good)[:300], "truncated JPEG"),
        "corrupt.tif": (tiff_bytes(rng_image((64, 64), "uint16"))[:500], "truncated TIFF"),
        "corrupt.fits": (fits_bytes(rng_image((64, 64), "float32"))[:4000], "truncated FITS"),
        "empty.png": (b"", "empty file"),
        "notes.png": (b"shopping list\n", "not a PNG file"),
        "complex.tif": (tiff_bytes(np.ones((16, 16), np.complex64)), "complex"),
        "cube4d.tif": (tiff_bytes(np.zeros((2, 3, 16, 16), np.uint8), photometric="minisblack"),
                       "unsupported dimensions"),
        "nan.fits": (fits_bytes(np.full((16, 16), np.nan, np.float32)), "NaN"),
        "inf.fits": (fits_bytes(np.full((16, 16), np.inf)), "Inf"),
        "bomb.png": (huge_png_header(50000, 50000), "too many pixels"),
        "dot.png": (png_bytes(np.zeros((1, 1), np.uint8)), "too small: 1x1"),
    }
    for name, (data, _) in bad.items():
        (root / name).write_bytes(data)
    expect = {str(root / k): v[1] for k, v in bad.items()}
    # unreadable: a dangling symlink (chmod 000 does not stop root from reading)
    os.symlink(root / "gone.png", root / "dangling.png")
    expect[str(root / "dangling.png")] = "broken symbolic link"
    if os.geteuid() != 0:
        (root / "locked.png").write_bytes(png_bytes(good))
        os.chmod(root / "locked.png", 0)
        expect[str(root / "locked.png")] = "cannot read: Permission denied"
    return expect


def test_bad_files_are_rejected_and_the_batch_completes(store, tmp_path):
    expect = _bad_batch(tmp_path / "batch")
    missing = str(tmp_path / "no-such-dir")
    expect[missing] = "no such file or directory"
    report = ingest([str(tmp_path / "batch"), missing], store, progress=False)
    assert report.counts["ingested"] == 3
    got = {r.source: r.reason for r in report.rejected}
    assert set(got) == set(expect)
    for src, needle in expect.items():
        assert needle in got[src], (src, got[src])
    table = store.read_table("rejected")
    assert {(r["source"], r["reason"]) for r in table} == set(got.items())
    assert all(r["time"] for r in table)
    # nothing rejected left anything in the store; all 3 good images are complete
    assert len(store.image_ids("input", complete_only=False)) == 3
    # a second run rejects the same files again but does not duplicate table rows
    again = ingest([str(tmp_path / "batch"), missing], store, progress=False)
    assert again.counts == {"ingested": 0, "present": 3, "rejected": len(expect)}
    assert len(store.read_table("rejected")) == len(table)


def test_strict_raises_after_the_whole_batch(make_store, tmp_path):
    store = make_store("local")
    _good_dir(tmp_path / "p", 2)
    (tmp_path / "p" / "bad.png").write_bytes(b"")
    with pytest.raises(IngestRejected) as info:
        ingest([str(tmp_path / "p")], store, progress=False, strict=True)
    assert info.value.report.counts == {"ingested": 2, "present": 0, "rejected": 1}


def test_sources_globs_and_symlink_loops(make_store, tmp_path):
    store = make_store("local")
    root = _good_dir(tmp_path / "tree", 2)
    (root / "deep").mkdir()
    (root / "deep" / "x.PNG").write_bytes(png_bytes(smooth_image((20, 20), 3)))
    (root / "deep" / "readme.txt").write_text("not an image")  # skipped in directories
    os.symlink(root, root / "deep" / "loop")  # a symlink loop must not hang the walk
    report = ingest([str(root / "**" / "*.PNG")], store, progress=False)
    assert [r.name for r in report.rows] == ["x.PNG"]
    report = ingest([str(root)], store, progress=False)
    assert [r.name for r in report.rows] == ["x.PNG", "img0_0.png", "img0_1.png"]
    assert report.counts == {"ingested": 2, "present": 1, "rejected": 0}
    report = ingest([str(tmp_path / "*.nothing")], store, progress=False)
    assert report.rejected[0].reason == "no files match the pattern"


@pytest.mark.s3
def test_s3_sources(make_store, tmp_path, s3_server, s3_settings):
    from restoreflow.storage.sources import s3_filesystem

    store = make_store("s3")
    fs = s3_filesystem(s3_settings)
    prefix = f"{s3_server.bucket}/sources-{tmp_path.name}"
    files = {f"photos/a{i}.png": png_bytes(smooth_image((30, 40, 3), i)) for i in range(2)}
    files["photos/sub/b.fits"] = fits_bytes(rng_image((20, 20), "float32"))
    files["photos/notes.txt"] = b"skipped"
    files["photos/zero.png"] = b""
    for k, v in files.items():
        fs.pipe_file(f"{prefix}/{k}", v)
    report = ingest([f"s3://{prefix}/photos"], store, progress=False)
    assert [r.source for r in report.rows] == [
        f"s3://{prefix}/photos/{k}" for k in ("a0.png", "a1.png", "sub/b.fits", "zero.png")]
    assert report.counts == {"ingested": 3, "present": 0, "rejected": 1}
    iid = report.rows[0].image_id
    assert store.attrs("input", iid)["source"] == f"s3://{prefix}/photos/a0.png"
    report = ingest([f"s3://{prefix}/photos/a0.png", f"s3://{prefix}/nothing-here"], store,
                    progress=False)
    assert report.present[0].image_id == iid
    assert report.rejected[0].reason == "no such object or prefix"


def test_ingest_array(make_store):
    store = make_store("local")
    a = rng_image((40, 50, 3), "float32", 1)
    iid = ingest_array(store, a, "sim.npy")
    attrs = store.attrs("input", iid)
    assert attrs["format"] == "array" and attrs["status"] == "complete"
    assert attrs["norm_offset"] == pytest.approx(float(a.min()))
    assert attrs["norm_scale"] == pytest.approx(float(a.max() - a.min()))
    assert ingest_array(store, a, "sim.npy") == iid  # idempotent
    norm = store.read("input", iid, normalised=True)
    assert norm.min() == 0.0 and norm.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="NaN"):
        ingest_array(store, np.full((9, 9), np.nan, np.float32), "bad")
    with pytest.raises(ValueError, match="dtype"):
        ingest_array(store, np.ones((9, 9), np.int64), "bad")


def test_cli_ingest_exit_codes_and_rejection_lines(tmp_path, monkeypatch, local_settings):
    from restoreflow.cli import app

    monkeypatch.setenv("RESTOREFLOW_TILE_SIZE", "64")
    src = _good_dir(tmp_path / "in", 2)
    (src / "broken.png").write_bytes(b"")
    uri = str(tmp_path / "cli-store")
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(src), "--store", uri, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"REJECTED {src / 'broken.png'}: empty file (0 bytes)" in res.output
    assert "2 ingested, 0 already present, 1 rejected" in res.output
    res = runner.invoke(app, ["ingest", str(src), "--store", uri, "--strict"])
    assert res.exit_code == 1
    assert "0 ingested, 2 already present, 1 rejected" in res.output
    res = runner.invoke(app, ["ingest", str(src / "img0_0.png"), "--store", uri, "--strict"])
    assert res.exit_code == 0
    res = runner.invoke(app, ["ls", "input", "--store", uri])
    assert res.exit_code == 0 and "input: 2 image(s), 2 complete" in res.output
    assert "img0_0.png" in res.output and "90x70 rgb" in res.output
    out = tmp_path / "exported"
    res = runner.invoke(app, ["export", "--store", uri, "--collection", "input",
                              "--format", "tiff", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert len(list(out.glob("*.tif"))) == 2
    res = runner.invoke(app, ["export", "--store", uri, "--collection", "nope",
                              "--format", "png", "--out", str(out)])
    assert res.exit_code == 2
    # a non-store directory is refused, and nothing is written into it
    res = runner.invoke(app, ["ingest", str(src), "--store", str(src)])
    assert res.exit_code == 2 and "not a restoreflow store" in res.output
    assert not (src / "zarr.json").exists()
