"""What a new user trips over (store verbs): a verb that needs images says so in one line
naming the store and the next step, and creates nothing, when the store is missing,
mistyped or empty; ``ls`` summarises by collection (``--images`` or a collection lists the
images, with the role of each input image); ``--sampler`` and ``--format`` are choices
that ``--help`` lists; every ``--store`` option has the same help text."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from restoreflow.cli import app

DEG = "gaussian_noise(sigma=0.05)"


def _cli(*args):
    # wide enough that rich does not wrap a usage error or a --help line
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def _one_line_error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output
    return lines[0]


def _pngs(folder, n, size=(24, 32), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = (rng.random((*size, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"p{seed}_{i}.png")
    return folder


def _verbs(store, out):
    """Every verb that reads images from a store, with otherwise valid arguments."""
    return {
        "ls": ["ls", "--store", store],
        "ls input": ["ls", "input", "--store", store],
        "simulate": ["simulate", "-d", DEG, "--store", store],
        "report": ["report", "--store", store, "--out", str(out / "report.html")],
        "export": ["export", "--store", store, "--format", "png", "--out", str(out / "x")],
        "restore": ["restore", "-d", DEG, "--store", store, "--steps", "1"],
    }


def _assert_needs_ingest(res, store):
    assert res.exit_code == 2, res.output
    line = _one_line_error(res)
    assert f"error: {store}: no store here (or no images in it)" in line, line
    assert f"run 'restoreflow ingest SRC... --store {store}' first" in line, line


def test_verbs_on_a_missing_store_fail_in_one_line_and_create_nothing(tmp_path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    before = sorted(os.listdir(tmp_path))
    for verb, args in _verbs("typo-store", tmp_path / "out").items():
        res = _cli(*args)
        _assert_needs_ingest(res, "typo-store")
        assert sorted(os.listdir(tmp_path)) == before, verb
        assert os.listdir(tmp_path / "out") == [], verb
    absolute = str(tmp_path / "nested" / "store")
    _assert_needs_ingest(_cli("ls", "--store", absolute), absolute)
    assert not (tmp_path / "nested").exists()


def test_verbs_on_a_store_without_images_fail_in_one_line(tmp_path):
    """An ingest whose every file was rejected leaves a store with no images."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"")
    store = str(tmp_path / "store")
    res = _cli("ingest", str(bad), "--store", store, "--no-progress")
    assert res.exit_code == 0 and "0 ingested" in res.output, res.output
    assert os.path.isfile(os.path.join(store, "zarr.json"))
    (tmp_path / "out").mkdir()
    for args in _verbs(store, tmp_path / "out").values():
        _assert_needs_ingest(_cli(*args), store)
    assert os.listdir(tmp_path / "out") == []
    # images in other collections do not count for simulate, which degrades input
    assert not os.path.exists(os.path.join(store, "degraded"))


def _rows(output: str) -> dict[str, list[str]]:
    """{first cell: cells} of the rich tables in ``output``."""
    out = {}
    for ln in output.splitlines():
        if ln.startswith(("│", "┃")):  # a row, a header
            cells = [c.strip() for c in ln.replace("┃", "│").strip("│").split("│")]
            out[cells[0]] = cells
    return out


@pytest.fixture()
def roles_store(tmp_path):
    """A store with 5 input images: 3 sources (2 of them degraded), 1 calibration
    image, 1 corpus image; and a degraded collection with one image still writing."""
    from restoreflow.storage.store import TileStore

    store = str(tmp_path / "store")
    res = _cli("ingest", str(_pngs(tmp_path / "src", 5)), "--store", store, "--no-progress")
    assert res.exit_code == 0, res.output
    ts = TileStore(store)
    by_name = {a["name"]: i for i, a in ts.image_attrs("input").items()}
    ids = [by_name[f"p0_{k}.png"] for k in range(5)]
    rng = np.random.default_rng(1)
    for coll, iid, complete in (("degraded", ids[0], True), ("degraded", ids[1], False),
                                ("calibration-abc.degraded", ids[3], True)):
        ts.create_image(coll, iid, (3, 24, 32), np.float32, overwrite=True)
        ts.write_image(coll, iid, rng.random((3, 24, 32)).astype(np.float32))
        if complete:
            ts.mark_complete(coll, iid)
    ts.put_bytes("index/default/index.json", json.dumps({"ids": [ids[4], ids[0]]}).encode())
    return store, ids


def test_ls_summarises_by_collection(roles_store):
    store, ids = roles_store
    res = _cli("ls", "--store", store)
    assert res.exit_code == 0, res.output
    rows = _rows(res.stdout)
    header = ["collection", "images", "complete", "writing", "megapixels", "stored"]
    assert rows["collection"] == header
    assert set(rows) == {"collection", "input", "degraded", "calibration-abc.degraded"}
    got = {c: dict(zip(header, cells, strict=True)) for c, cells in rows.items()}
    assert (got["input"]["images"], got["input"]["complete"], got["input"]["writing"]) == (
        "5", "5", "0")
    assert (got["degraded"]["images"], got["degraded"]["complete"],
            got["degraded"]["writing"]) == ("2", "1", "1")
    assert got["calibration-abc.degraded"]["images"] == "1"
    assert got["input"]["megapixels"] == f"{5 * 24 * 32 / 1e6:.2f}"
    for c in ("input", "degraded"):
        assert got[c]["stored"].endswith(("B", "KiB", "MiB")), got[c]
    assert not any(i in res.stdout for i in ids)  # no per-image rows by default
    assert len(res.stdout.splitlines()) < 15


def test_ls_images_and_collection_list_the_images_with_their_role(roles_store):
    store, ids = roles_store
    res = _cli("ls", "input", "--store", store)
    assert res.exit_code == 0, res.output
    rows = _rows(res.stdout)
    assert rows["image id"] == ["image id", "name", "size", "dtype", "status", "role"]
    assert set(rows) - {"image id"} == set(ids)
    assert [rows[i][-1] for i in ids] == ["source, corpus", "source", "source",
                                          "calibration", "corpus"]
    assert rows[ids[0]][1:5] == ["p0_0.png", "32x24 rgb", "uint8", "complete"]
    assert "degraded" not in res.stdout

    res = _cli("ls", "degraded", "--store", store)
    assert res.exit_code == 0, res.output
    rows = _rows(res.stdout)
    assert rows["image id"] == ["image id", "name", "size", "dtype", "status"]
    assert {i: r[4] for i, r in rows.items() if i != "image id"} == {
        ids[0]: "complete", ids[1]: "writing"}

    res = _cli("ls", "--images", "--store", store)
    assert res.exit_code == 0, res.output
    for title in ("input: 5 image(s), 5 complete", "degraded: 2 image(s), 1 complete",
                  "calibration-abc.degraded: 1 image(s), 1 complete"):
        assert title in res.stdout
    assert all(i in res.stdout for i in ids)


def test_ls_of_an_unknown_collection_is_one_line(roles_store):
    store, _ = roles_store
    res = _cli("ls", "restord", "--store", store)
    assert res.exit_code == 2, res.output
    line = _one_line_error(res)
    assert f"{store} has no collection 'restord'" in line
    assert "input" in line and "degraded" in line
    assert res.stdout == ""


def _help(*verb) -> str:
    res = _cli(*verb, "--help")
    assert res.exit_code == 0, res.output
    return res.output


def test_help_lists_the_formats_and_the_samplers():
    assert "png|tiff|fits" in _help("export")
    for verb in ("restore", "calibrate"):
        assert "ddpg|ddnm|dps|diffpir" in _help(verb)


def test_help_lists_the_verbs_in_their_order():
    """The modules of restoreflow.cli add their verbs to the app as its __init__ imports
    them: --help lists the verbs in this order."""
    import click
    import typer

    group = typer.main.get_command(app)
    assert group.list_commands(click.Context(group)) == [
        "simulate", "ingest", "export", "ls", "serve-s3", "train-prior", "run", "rerun",
        "restore", "score", "calibrate", "report", "demo", "serve", "index"]


def test_sampler_choices_are_the_registry():
    from typing import get_args

    from restoreflow.cli.options import SamplerName
    from restoreflow.samplers import SAMPLERS

    assert get_args(SamplerName) == tuple(SAMPLERS)


def test_bad_format_and_sampler_are_usage_errors(tmp_path):
    res = _cli("export", "--store", str(tmp_path / "s"), "--format", "jpg",
               "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "'jpg' is not one of 'png', 'tiff', 'fits'" in res.output
    res = _cli("restore", "-d", DEG, "--store", str(tmp_path / "s"), "--sampler", "ddmp")
    assert res.exit_code == 2 and "'ddmp' is not one of" in res.output
    assert os.listdir(tmp_path) == []


def test_format_is_case_insensitive(tmp_path):
    store = str(tmp_path / "store")
    assert _cli("ingest", str(_pngs(tmp_path / "src", 1)), "--store", store,
                "--no-progress").exit_code == 0
    res = _cli("export", "--store", store, "--format", "TIFF", "--out", str(tmp_path / "o"))
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "o").glob("*.tif"))) == 1


def test_every_store_option_has_one_help_text():
    import typer

    from restoreflow.cli.options import STORE_HELP
    from restoreflow.settings import Settings

    assert Settings.model_fields["store"].default == "restoreflow-store"
    assert "$RESTOREFLOW_STORE, else ./restoreflow-store" in STORE_HELP

    def walk(cmd, name):
        for sub_name, sub in (getattr(cmd, "commands", None) or {}).items():
            yield from walk(sub, f"{name} {sub_name}".strip())
        for p in getattr(cmd, "params", []):
            if "--store" in getattr(p, "opts", ()):
                yield name, p.help

    found = dict(walk(typer.main.get_command(app), ""))
    assert {"ls", "ingest", "export", "simulate", "restore", "calibrate", "report",
            "index build", "index search"} <= set(found)
    # rerun's --store overrides the manifest's store: its own wording
    assert {v: h for v, h in found.items() if v != "rerun" and h != STORE_HELP} == {}


@pytest.mark.s3
def test_s3_missing_prefix_fails_and_ls_sums_objects(s3_settings, s3_server, monkeypatch,
                                                     tmp_path):
    import restoreflow.settings
    from restoreflow.storage.ingest import ingest
    from restoreflow.storage.store import TileStore

    monkeypatch.setattr(restoreflow.settings, "get_settings", lambda: s3_settings)
    uri = f"s3://{s3_server.bucket}/cli-store-missing"
    _assert_needs_ingest(_cli("ls", "--store", uri), uri)
    assert not TileStore(uri, s3_settings).fs.exists(f"{s3_server.bucket}/cli-store-missing")

    uri = f"s3://{s3_server.bucket}/cli-store-ls"
    ingest([str(_pngs(tmp_path / "src", 2))], TileStore(uri, s3_settings), progress=False)
    res = _cli("ls", "--store", uri)
    assert res.exit_code == 0, res.output
    cells = _rows(res.stdout)["input"]
    assert cells[1:4] == ["2", "2", "0"] and cells[5].endswith(("B", "KiB")), cells


def test_export_of_a_collection_without_complete_images_fails_in_one_line(tmp_path):
    from restoreflow.storage.store import TileStore

    store = str(tmp_path / "store")
    assert _cli("ingest", str(_pngs(tmp_path / "src", 1)), "--store", store,
                "--no-progress").exit_code == 0
    ts = TileStore(store)
    (iid,) = ts.image_ids("input")
    ts.create_image("restored", iid, (3, 24, 32), np.float32)  # never completed
    res = _cli("export", "--store", store, "--collection", "restored", "--format", "png",
               "--out", str(tmp_path / "o"))
    assert res.exit_code == 2, res.output
    line = _one_line_error(res)
    assert "collection 'restored' has no complete image to export" in line, line
    assert not (tmp_path / "o").exists()
