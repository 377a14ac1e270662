"""deployments/prefect.yaml deploys with nothing but its folder (issue 19 item 7): with
RESTOREFLOW_DEPLOY_DIR unset, the runs' working directory is the folder that holds
nightly.py and example-run.yaml, not an empty path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"


def test_prefect_deploy_records_the_deployment_folder(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    folder = tmp_path / "deployments"
    shutil.copytree(DEPLOYMENTS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="restoreflow", type="process"),
                                overwrite=True)
    env = {k: v for k, v in os.environ.items() if k != "RESTOREFLOW_DEPLOY_DIR"}
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    prefect = Path(sys.executable).with_name("prefect")
    r = subprocess.run([str(prefect), "--no-prompt", "deploy", "--all"], cwd=folder, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("nightly-archive/nightly-archive")
    dirs = [step[k]["directory"] for step in dep.pull_steps for k in step
            if k.endswith("set_working_directory")]
    assert dirs == [str(folder.resolve())]
    assert (Path(dirs[0]) / dep.parameters["spec_path"]).is_file()
