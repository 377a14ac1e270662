"""The README and the shipped examples agree with the CLI, the store and the measurements
(issue 19 item 7)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _click_commands():
    """{"index build": click command, ...} for every verb of the typer app."""
    import typer

    from restoreflow.cli import app

    out = {}

    def walk(cmd, prefix):
        if getattr(cmd, "commands", None):  # a group (typer vendors its own click)
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            out[prefix] = cmd

    walk(typer.main.get_command(app), "")
    return out


def _table_rows():
    """(verb, usage) of the README's command table."""
    rows = re.findall(r"^\| `restoreflow ([^`]*)`(?: / `([^`]*)`)? \|", README, re.M)
    assert len(rows) >= 10
    out = []
    for usage, second in rows:
        out.append(usage)
        if second:  # "index search IMAGE -k K" shares the row of "index build"
            out.append(second)
    return out


def test_readme_command_table_matches_the_cli():
    commands = _click_commands()
    assert set(commands) >= {"ingest", "calibrate", "index build", "index search", "demo"}
    seen = set()
    for usage in _table_rows():
        words = usage.split()
        verb = " ".join(words[:2]) if words[0] == "index" else words[0]
        assert verb in commands, f"README lists `{verb}`, the CLI has no such verb"
        seen.add(verb)
        opts = {o for p in commands[verb].params for o in p.opts + p.secondary_opts}
        for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", usage):
            assert flag in opts, f"README: `{verb} {flag}`, not an option of {verb}"
    assert seen == set(commands), f"verbs not in the README table: {set(commands) - seen}"


@pytest.mark.parametrize("verb, flag", [("calibrate", "--clean"), ("index build", "--corpus")])
def test_readme_shows_list_options_repeated(verb, flag):
    """These options take one value each (a shell glob fails): the README must not write
    them as `--clean SRC...`."""
    opt = next(p for p in _click_commands()[verb].params if flag in p.opts)
    assert opt.multiple and opt.nargs == 1
    assert f"{flag} SRC..." not in README
    assert f"{flag} SRC [{flag} SRC]..." in README


def test_readme_points_inside_the_repository():
    assert "../shared" not in README and "shared/design.md" not in README
    for link in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / link).is_file(), link
    assert (ROOT / "docs" / "design.md").is_file()


def test_readme_store_layout_names_the_real_collections():
    from restoreflow.storage import layout
    from restoreflow.storage.layout import REJECTED_TABLE, TABLES_DIR
    from restoreflow.storage.lock import LOCK_DIR

    for doc in (README, (ROOT / "docs" / "store-layout.md").read_text(encoding="utf-8")):
        tree = re.search(r"```\n<store>/\n(.*?)```", doc, re.S).group(1)
        assert "uncertainty" not in tree
        for name in (layout.INPUT, layout.DEGRADED, layout.RESTORED, layout.INTERVAL_LO,
                     layout.INTERVAL_HI,
                     "calibration-<spec hash>.degraded", "calibration-<settings hash>.restored",
                     TABLES_DIR, "runs/<run_id>/manifest.json", "calibrations/", "index/",
                     "adapters/", LOCK_DIR):
            assert name in tree, name
        assert REJECTED_TABLE in tree


def test_readme_requirements_are_true():
    assert "need only Python 3.11" not in README
    assert "apt-get" in (ROOT / "Makefile").read_text() and "chromium" in README
    deps = (ROOT / "pyproject.toml").read_text()
    hard = deps.split("[project.optional-dependencies]")[0]
    assert "imagecodecs" in hard  # a hard dependency, so the README must not call it optional
    assert not re.search(r"need[s]? the `imagecodecs` package", README)


def _readme_spec() -> dict:
    block = re.search(r"### A run spec\n\n```yaml\n(.*?)```", README, re.S).group(1)
    return yaml.safe_load(block)


def test_examples_leave_adaptation_off_as_measured(tmp_path):
    """benchmarks/results/adapt.md: adaptation does not help the shipped prior, so the
    README's example, the deployment's example and the demo leave it off."""
    from restoreflow.demo import prepare_demo
    from restoreflow.spec import RunSpec

    assert not RunSpec.from_dict(_readme_spec()).adapt.enabled
    example = RunSpec.from_yaml(str(ROOT / "deployments" / "example-run.yaml"))
    assert not example.adapt.enabled
    assert "enabled: true" in (ROOT / "deployments" / "example-run.yaml").read_text()  # how to
    demo = RunSpec.from_dict(prepare_demo(tmp_path / "demo"))
    assert not demo.adapt.enabled and not (tmp_path / "demo" / "corpus").exists()
    on = RunSpec.from_dict(prepare_demo(tmp_path / "demo-adapt", adapt=True))
    assert on.adapt.enabled and on.adapt.neighbours == 3
    assert len(list((tmp_path / "demo-adapt" / "corpus").glob("*.png"))) >= on.adapt.neighbours


def test_readme_documents_deploy_and_run_facts():
    # every environment variable the deployment reads (outside comments) is documented
    text = (ROOT / "deployments" / "prefect.yaml").read_text()
    live = "\n".join(line.split("#")[0] for line in text.splitlines())
    for var in re.findall(r"\{\{\s*\$(\w+)\s*\}\}", live):
        assert var in README, var
    assert "RESTOREFLOW_DEPLOY_DIR" in README
    for fact in ("`running`", "`complete`", "`interrupted`", "umask", "RESTOREFLOW_PRIOR",
                 "PREFECT_HOME", "prefect server start", "prefect artifact ls"):
        assert fact in README, fact
