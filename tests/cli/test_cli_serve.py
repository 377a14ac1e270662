"""`restoreflow serve` refuses a bad --cron in one line, before it contacts Prefect."""

from __future__ import annotations

import numpy as np
import yaml
from PIL import Image
from typer.testing import CliRunner


def _spec_here(tmp_path, monkeypatch) -> None:
    """A valid run spec s.yaml in the current directory (tmp_path)."""
    (tmp_path / "src").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "src" / "a.png")
    spec = {"name": "n", "sources": ["src"], "store": "st", "report": None,
            "degradation": "gaussian_noise(sigma=0.1)"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)


def test_bad_cron_is_one_line(tmp_path, monkeypatch):
    from restoreflow.cli import app

    _spec_here(tmp_path, monkeypatch)
    r = CliRunner().invoke(app, ["serve", "s.yaml", "--cron", "61 * * * *"])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines == ["error: --cron '61 * * * *': Invalid cron string: "
                     "\"61 * * * *\""], r.output
    assert not (tmp_path / "st").exists()


def test_serve_refuses_an_ephemeral_api(tmp_path, monkeypatch):
    """A schedule kept by the process's own ephemeral Prefect API would die with it."""
    from restoreflow.cli import app

    _spec_here(tmp_path, monkeypatch)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(tmp_path / "none.toml"))
    r = CliRunner().invoke(app, ["serve", "s.yaml", "--cron", "0 3 * * *"])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "error: serve: no Prefect server: PREFECT_API_URL is not set"), r.output
    assert not (tmp_path / "st").exists()
