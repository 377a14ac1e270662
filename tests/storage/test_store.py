"""TileStore on a local directory and on SeaweedFS S3: layout, regions, attrs, tables."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from storage_files import rng_image

from restoreflow.storage.grid import tile_grid
from restoreflow.storage.store import TileStore
from restoreflow.storage.values import from_normalised, to_normalised


def _fill_by_tiles(store, coll, iid, data):
    for _, _, y0, y1, x0, x1 in store.tiles(coll, iid):
        store.write_region(coll, iid, data[:, y0:y1, x0:x1], y0, x0)


def test_create_write_read_by_tiles(store):
    data = rng_image((3, 150, 200), "uint16", seed=1)
    store.create_image("input", "img0", data.shape, "uint16",
                       {"name": "a.png", "norm_offset": 0.0, "norm_scale": 65535.0})
    assert store.status("input", "img0") == "writing"
    assert not store.has("input", "img0")
    assert store.image_ids("input") == []
    assert store.image_ids("input", complete_only=False) == ["img0"]
    tiles = store.tiles("input", "img0")
    # 150 = 64 + 64 + 22 rows, 200 = 64 * 3 + 8 columns
    assert len(tiles) == 3 * 4
    assert tiles[-1] == (2, 3, 128, 150, 192, 200)
    _fill_by_tiles(store, "input", "img0", data)
    store.mark_complete("input", "img0", note="done")
    assert store.has("input", "img0")
    assert store.attrs("input", "img0")["note"] == "done"
    assert store.image_ids("input") == ["img0"]
    assert store.collections() == ["input"]
    out = store.read("input", "img0")
    assert out.dtype == np.uint16 and out.shape == (3, 150, 200)
    np.testing.assert_array_equal(out, data)
    np.testing.assert_array_equal(store.read_region("input", "img0", 10, 140, 63, 199),
                                  data[:, 10:140, 63:199])
    norm = store.read("input", "img0", normalised=True)
    assert norm.dtype == np.float32
    np.testing.assert_allclose(norm, data / 65535.0, atol=1e-7)


def test_write_region_must_be_chunk_aligned(store):
    store.create_image("input", "img1", (1, 130, 100), "uint8", {})
    T = store.tile_size
    ok = np.ones((1, T, T), np.uint8)
    with pytest.raises(ValueError, match="multiple of T"):
        store.write_region("input", "img1", ok, 1, 0)
    with pytest.raises(ValueError, match="not chunk-aligned"):
        store.write_region("input", "img1", ok[:, :10], 0, 0)  # short of a whole tile
    with pytest.raises(ValueError, match="outside"):
        store.write_region("input", "img1", ok, 128, 0)  # 128 + 64 > 130
    with pytest.raises(ValueError, match=r"\(1, h, w\)"):
        store.write_region("input", "img1", np.ones((3, T, T), np.uint8), 0, 0)
    with pytest.raises(ValueError, match="cannot store float"):
        store.write_region("input", "img1", ok.astype(np.float32), 0, 0)
    # edge tiles reach the border; a 2x1-tile block is still chunk-aligned
    store.write_region("input", "img1", np.full((1, 2, 36), 7, np.uint8), 128, 64)
    store.write_region("input", "img1", np.full((1, 128, 64), 5, np.uint8), 0, 0)
    out = store.read("input", "img1")
    assert (out[:, 128:, 64:] == 7).all() and (out[:, :128, :64] == 5).all()


def test_plain_xarray_reads_the_store(store):
    import xarray as xr

    data = rng_image((3, 70, 90), "float32", seed=2)
    store.create_image("input", "img2", data.shape, "float32", {"name": "x.fits"})
    store.write_image("input", "img2", data)
    store.mark_complete("input", "img2")
    opts = store.settings.storage_options() if store.is_s3 else None
    ds = xr.open_zarr(store.uri, group="input/img2", consolidated=False, storage_options=opts)
    assert ds["pixels"].dims == ("band", "y", "x")
    assert ds["pixels"].dtype == np.float32
    assert ds.attrs["status"] == "complete" and ds.attrs["name"] == "x.fits"
    np.testing.assert_array_equal(ds["pixels"].values, data)
    with warnings.catch_warnings():  # without consolidated=False: works, with a warning
        warnings.simplefilter("ignore")
        plain = xr.open_zarr(store.uri, group="input/img2", storage_options=opts)
        np.testing.assert_array_equal(plain["pixels"].values, data)
    tree = xr.open_datatree(store.uri, engine="zarr", consolidated=False,
                            storage_options=opts)
    assert tree.attrs["restoreflow_layout"] == 1 and tree.attrs["tile_size"] == store.tile_size
    np.testing.assert_array_equal(tree["input/img2"]["pixels"].values, data)
    # and through our own handle
    np.testing.assert_array_equal(store.open_dataset("input", "img2")["pixels"].values, data)


def test_integer_input_is_not_masked_by_xarray(make_store):
    import xarray as xr

    store = make_store("local")
    data = np.zeros((1, 20, 20), np.uint8)  # all equal to zarr's fill value
    data[0, 0, 0] = 3
    store.create_image("input", "z", data.shape, "uint8", {})
    store.write_image("input", "z", data)
    ds = xr.open_zarr(store.uri, group="input/z", consolidated=False)
    assert ds["pixels"].dtype == np.uint8
    np.testing.assert_array_equal(ds["pixels"].values, data)


def test_existing_store_keeps_its_tile_size(make_store):
    store = make_store("local", name="keep", tile_size=32)
    store.create_image("input", "a", (1, 40, 40), "uint8", {})
    again = TileStore(store.uri, store.settings, tile_size=128)
    assert again.tile_size == 32
    root = json.loads((Path(store.uri) / "zarr.json").read_text())
    assert root["attributes"] == {"restoreflow_layout": 1, "tile_size": 32}
    meta = json.loads((Path(store.uri) / "input/a/pixels/zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 32, 32]
    assert meta["dimension_names"] == ["band", "y", "x"]


def test_derived_collection_inherits_input_attrs(store):
    raw = rng_image((3, 50, 60), "uint8", seed=3)
    store.create_image("input", "img3", raw.shape, "uint8",
                       {"name": "p.png", "dtype": "uint8", "norm_offset": 0.0,
                        "norm_scale": 255.0, "source": "/x/p.png"})
    store.write_image("input", "img3", raw)
    store.mark_complete("input", "img3")
    with pytest.raises(ValueError, match="float32"):
        store.create_image("restored", "img3", raw.shape, "uint8", {})
    store.create_image("restored", "img3", raw.shape, "float32",
                       {"collection_attrs": {"operator": "blur"}})
    a = store.attrs("restored", "img3")
    assert a["name"] == "p.png" and a["norm_scale"] == 255.0 and a["status"] == "writing"
    assert a["values"] == "normalised" and a["collection_attrs"] == {"operator": "blur"}
    # unwritten tiles of a float array read as NaN (never as plausible data)
    assert np.isnan(store.read("restored", "img3")).all()
    store.write_image("restored", "img3", store.read("input", "img3", normalised=True))
    store.mark_complete("restored", "img3")
    assert sorted(store.collections()) == ["input", "restored"]
    back = from_normalised(store.read("restored", "img3"), 0.0, 255.0, "uint8")
    np.testing.assert_array_equal(back, raw)


def test_overwrite_and_delete(store):
    store.create_image("input", "img4", (1, 20, 20), "int16", {})
    with pytest.raises(FileExistsError):
        store.create_image("input", "img4", (1, 20, 20), "int16", {})
    store.create_image("input", "img4", (1, 30, 20), "int16", {}, overwrite=True)
    assert store.shape("input", "img4") == (1, 30, 20)
    store.delete_image("input", "img4")
    assert store.status("input", "img4") is None
    with pytest.raises(KeyError):
        store.read("input", "img4")
    with pytest.raises(KeyError):
        store.delete_image("input", "img4")


def test_tables(store):
    assert store.read_table("rejected") == []
    rows = [{"source": "a", "reason": "bad", "time": 1}, {"source": "b", "reason": "bad",
                                                          "time": 1}]
    assert store.append_rows("rejected", rows, key=("source", "reason")) == 2
    again = [{"source": "a", "reason": "bad", "time": 2}, {"source": "a", "reason": "worse",
                                                           "time": 2}]
    assert store.append_rows("rejected", again, key=("source", "reason")) == 1
    got = store.read_table("rejected")
    assert [(r["source"], r["reason"], r["time"]) for r in got] == [
        ("a", "bad", 1), ("b", "bad", 1), ("a", "worse", 2)]
    assert store.append_rows("rejected", again, key=("source", "reason")) == 0
    store.write_table("quality", [{"image_id": "x", "psnr": np.float32(31.5)}])
    assert store.read_table("quality") == [{"image_id": "x", "psnr": 31.5}]
    assert store.exists("tables/quality.json")
    with pytest.raises(ValueError):
        store.read_table("../evil")
    # tables are not a collection
    assert "tables" not in store.collections()


def test_small_files_and_path_normalisation(store):
    store.put_bytes("adapters/abc/adapter.bin", b"\x00\x01")
    assert store.get_bytes("adapters/abc/adapter.bin") == b"\x00\x01"
    assert store.get_bytes("./adapters//abc/adapter.bin") == b"\x00\x01"
    assert store.exists("adapters/abc/adapter.bin")
    assert not store.exists("adapters/abc/missing.bin")
    assert store.list_files("adapters") == ["adapters/abc/adapter.bin"]
    with pytest.raises(FileNotFoundError):
        store.get_bytes("adapters/nope")
    for bad in ("../x", "a/../../x", "/etc/passwd", "", "a/zarr.json", "s3://b/k", "C:/x"):
        with pytest.raises(ValueError):
            store.put_bytes(bad, b"x")


def test_refuses_to_turn_a_photo_folder_into_a_store(tmp_path, local_settings):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"x")
    store = TileStore(tmp_path / "photos", local_settings)
    with pytest.raises(ValueError, match="not a restoreflow store"):
        store.create_image("input", "a", (1, 10, 10), "uint8", {})
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["a.png"]


def test_not_a_restoreflow_hierarchy(tmp_path, local_settings):
    import zarr

    zarr.open_group(tmp_path / "other", mode="w", zarr_format=3, attributes={"x": 1})
    with pytest.raises(ValueError, match="not a restoreflow store"):
        TileStore(tmp_path / "other", local_settings)


def test_names_are_validated(store):
    for bad in ("..", "a/b", "tables", "", ".hidden"):
        with pytest.raises(ValueError):
            store.create_image("input", bad, (1, 8, 8), "uint8", {})
    with pytest.raises(ValueError):
        store.create_image("input", "ok", (8, 8), "uint8", {})
    with pytest.raises(ValueError):
        store.create_image("input", "ok", (1, 8, 8), "int64", {})


def test_pickle_reconnects(store):
    store.create_image("input", "p", (1, 10, 10), "uint8", {})
    clone = pickle.loads(pickle.dumps(store))
    assert clone.uri == store.uri and clone.tile_size == store.tile_size
    assert clone.status("input", "p") == "writing"


def test_tile_grid_and_normalisation_helpers():
    assert tile_grid(5, 3, 4) == [(0, 0, 0, 4, 0, 3), (1, 0, 4, 5, 0, 3)]
    x = np.array([[0, 65535]], np.uint16)
    np.testing.assert_array_equal(to_normalised(x, 0, 65535), [[0.0, 1.0]])
    y = from_normalised(np.array([-0.5, 0.5, 2.0], np.float32), 0, 255, "uint8")
    np.testing.assert_array_equal(y, [0, 128, 255])
