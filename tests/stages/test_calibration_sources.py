"""Which calibration images form one source (the exchangeable unit of the bounds)."""

import pytest
from pydantic import ValidationError

from restoreflow.spec import CalibrationOptions
from restoreflow.stages.calibrate import source_of


def test_source_of_each_rule():
    a = {"image_id": "abc", "source": "/data/cal/m31/crop-1.png",
         "source_metadata": {"OBJECT": "M31"}}
    assert source_of(a, "image") == "/data/cal/m31/crop-1.png"
    assert source_of(a, "folder") == "/data/cal/m31"
    assert source_of({**a, "source": "s3://b/cal/m31/2.fits"}, "folder") == "s3://b/cal/m31"
    assert source_of(a, "metadata:OBJECT") == "OBJECT=M31"
    with pytest.raises(ValueError, match="crop-1.png: no metadata key 'DATE-OBS'"):
        source_of(a, "metadata:DATE-OBS")


def test_group_by_is_validated():
    assert CalibrationOptions(clean=["x"], group_by="metadata:OBJECT").group_by
    with pytest.raises(ValidationError):
        CalibrationOptions(clean=["x"], group_by="photo")


def test_cli_line_shows_only_out_of_sample_coverage():
    from restoreflow.cli.run_verbs import calibration_line

    res = {"settings_hash": "h", "n": 40, "sources": 20, "alpha": 0.1,
           "coverage": {"psnr": 0.875, "ssim": 0.9, "method": "leave one source out"}}
    assert calibration_line(res) == (
        "calibration h: 40 images from 20 sources, alpha=0.1; out-of-sample coverage "
        "(leave one source out) PSNR 87.5%, SSIM 90.0% (target 90%)")
    in_sample = {**res, "coverage": {"psnr": 1.0, "ssim": 1.0}}  # fit rows counted
    assert "100.0" not in calibration_line(in_sample) and "n/a" in calibration_line(in_sample)
