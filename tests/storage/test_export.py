"""Export: safe file names confined to out_dir, atomic writes, provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from storage_files import rng_image

from restoreflow.storage.export import export, export_filename, safe_stem
from restoreflow.storage.ingest import ingest, ingest_array


@pytest.mark.parametrize(
    ("name", "stem"),
    [("../../evil", "evil"), ("/etc/passwd", "etc_passwd"), ("..\\..\\win.png", "win"),
     ("a b/c d.tif", "a_b_c_d"), ("....", "image"), ("", "image"), (None, "image"),
     (".hidden.png", "hidden"), ("x" * 300 + ".png", "x" * 80), ("naïve café.jpg", "na_ve_caf"),
     # separators and other unsafe characters become _, no part of the name is dropped
     ("new\\nline.png", "new_nline"), ("C:\\evil.png", "C_evil"), ("dir.v2/file", "dir.v2_file"),
     ('a:b*c?d"e<f>g|h.png', "a_b_c_d_e_f_g_h"), ("tab\tbell\x07.tif", "tab_bell"),
     # names that are already safe keep their stem
     ("photo_01.png", "photo_01"), ("IMG-2024.06.01.tif", "IMG-2024.06.01"), ("x", "x")],
)
def test_safe_stem(name, stem):
    assert safe_stem(name) == stem


def test_export_stays_inside_out_dir(store, tmp_path):
    a = rng_image((20, 30), "uint8")
    iid = ingest_array(store, a, "../../evil")
    out = tmp_path / "deep" / "out"
    (path,) = export(store, "input", "png", out)
    assert path.parent == out.resolve()
    assert path.name == f"{iid}_evil.png"
    written = [p for p in tmp_path.rglob("*") if p.is_file()
               and (store.is_s3 or not str(p).startswith(store._root))]
    assert written == [path]  # nothing landed anywhere else
    np.testing.assert_array_equal(np.asarray(Image.open(path)), a)
    prov = json.loads(Image.open(path).info["restoreflow"])
    assert prov["image_id"] == iid and prov["collection"] == "input"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    assert export_filename("abc", "../../x.png", "fits") == "abc_x.fits"


def test_export_keeps_the_name_around_a_backslash(tmp_path, make_store):
    """A file named ``new<newline>line.png`` is stored as ``new\\nline.png`` (escaped) and
    exported as ``<id>_new_nline.png``: the part before the backslash is kept."""
    store = make_store("local")
    src = tmp_path / "src"
    src.mkdir()
    a = rng_image((12, 14, 3), "uint8")
    Image.fromarray(a).save(src / "new\nline.png")
    report = ingest([str(src)], store, progress=False)
    (row,) = report.rows
    assert row.name == "new\\nline.png" and row.status == "ingested"
    (path,) = export(store, "input", "png", tmp_path / "out")
    assert path.name == f"{row.image_id}_new_nline.png"
    np.testing.assert_array_equal(np.asarray(Image.open(path)), a)


def test_export_selected_ids_and_errors(make_store, tmp_path):
    store = make_store("local")
    ids = [ingest_array(store, rng_image((12, 12), "uint16", i), f"n{i}.png") for i in range(3)]
    paths = export(store, "input", "tiff", tmp_path / "o", image_ids=ids[1:2])
    assert [p.name for p in paths] == [f"{ids[1]}_n1.tif"]
    with pytest.raises(KeyError):
        export(store, "input", "tiff", tmp_path / "o", image_ids=["0" * 20])
    with pytest.raises(ValueError, match="unknown format"):
        export(store, "input", "jpeg", tmp_path / "o")
    # an image still being written is not exported
    store.create_image("input", "f" * 20, (1, 12, 12), "uint8", {"name": "partial.png"})
    assert len(export(store, "input", "png", tmp_path / "all")) == 3
