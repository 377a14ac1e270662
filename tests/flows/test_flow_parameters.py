"""restore and calibrate take the restore settings as one RestoreConfig parameter: Prefect
serialises it to the API as its JSON form and validates that form back into the model
(a run from the Prefect UI or a deployment), refusing bad settings by field."""

from __future__ import annotations

import pytest

from restoreflow.spec import CalibrationOptions
from restoreflow.stages.config import RestoreConfig

D = "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)"
CFG = RestoreConfig(degradation=D, seed=1, prior="/p",
                    restore={"sampler": "ddpg", "steps": 5, "options": {"gamma": 8}},
                    adapt={"enabled": True, "targets": ["conv1"]})


def test_restore_flow_parameters_round_trip_through_their_json_form():
    from restoreflow.flows.restore import restore_flow

    wire = restore_flow.serialize_parameters({"store": "/s", "cfg": CFG})
    assert wire["cfg"] == CFG.model_dump(mode="json")
    params = restore_flow.validate_parameters({"store": "/s", "cfg": wire["cfg"]})
    assert params["cfg"] == CFG and isinstance(params["cfg"], RestoreConfig)
    assert params["cfg"].settings_hash("h") == CFG.settings_hash("h")


def test_calibrate_flow_parameters_round_trip_through_their_json_form():
    from restoreflow.flows.pipeline import calibrate_flow

    cal = CalibrationOptions(clean=["cal/"], alpha=0.2)
    wire = calibrate_flow.serialize_parameters({"store": "/s", "cfg": CFG, "calibration": cal})
    params = calibrate_flow.validate_parameters({"store": "/s", **{k: wire[k] for k in (
        "cfg", "calibration")}})
    assert params["cfg"] == CFG and params["calibration"] == cal


def test_bad_settings_from_the_api_are_refused_by_name():
    from prefect.exceptions import ParameterTypeError

    from restoreflow.flows.restore import restore_flow

    bad = CFG.model_dump(mode="json")
    bad["restore"]["options"] = {"gama": 3}
    with pytest.raises(ParameterTypeError, match="unknown option 'gama' of sampler ddpg"):
        restore_flow.validate_parameters({"store": "/s", "cfg": bad})


def test_flow_run_names_read_the_settings_in_either_form(monkeypatch):
    from restoreflow.tasks import names

    for cfg in (CFG, CFG.model_dump(mode="json")):
        monkeypatch.setattr(names, "_flow_parameters", lambda c=cfg: {
            "cfg": c, "calibration": {"clean": ["c/"], "alpha": 0.2}})
        assert names.restore_flow_name() == f"restore degraded -> restored: {CFG.degradation}, " \
                                            "ddpg 5 steps"
        assert names.calibrate_flow_name() == f"calibrate {CFG.degradation}, ddpg 5 steps, " \
                                              "alpha 0.2"


def test_flows_validate_their_typed_parameters_after_a_pickle_round_trip():
    """A served deployment's runner gets the flow cloudpickled by value: the typed
    parameters (RunSpec, RestoreConfig) must still validate there (string annotations
    would name types missing from the pickled function's globals)."""
    import subprocess
    import sys

    import cloudpickle

    from restoreflow.flows.pipeline import calibrate_flow, pipeline_flow
    from restoreflow.flows.restore import restore_flow

    code = (
        "import pickle, sys\n"
        "p, c, r = pickle.loads(sys.stdin.buffer.read())\n"
        f"spec = {{'sources': ['x'], 'degradation': {D!r}}}\n"
        "print(type(p.validate_parameters({'spec': spec})['spec']).__name__)\n"
        f"cfg = {CFG.model_dump(mode='json')!r}\n"
        "print(type(c.validate_parameters({'store': 's', 'cfg': cfg,\n"
        "                                  'calibration': {'clean': ['x']}})['cfg']).__name__)\n"
        "print(type(r.validate_parameters({'store': 's', 'cfg': cfg})['cfg']).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False,
                         input=cloudpickle.dumps((pipeline_flow, calibrate_flow, restore_flow)))
    assert out.stdout.decode().split() == ["RunSpec", "RestoreConfig", "RestoreConfig"], \
        out.stderr.decode()[-2000:]
