"""restoreflow.flows. No module here uses ``from __future__ import annotations``: a served
flow reaches its runner cloudpickled by value, so the parameter types Prefect validates
against (RunSpec, RestoreConfig) must be objects, not strings (test_flow_parameters.py)."""
