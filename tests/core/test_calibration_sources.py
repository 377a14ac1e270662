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
