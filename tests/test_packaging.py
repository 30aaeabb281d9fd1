"""The install files agree with each other and never ask for an unpinned torch."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_declares_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = set(map(_norm, project["dependencies"] + project["optional-dependencies"]["notebooks"]))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(map(_norm, pip_section)) == expected
    assert "pip" in env["dependencies"]
    assert any(str(d).startswith("python") for d in env["dependencies"])


def test_torch_is_never_unpinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_reqs = [r for r in project["dependencies"] if _norm(r).startswith("torch")]
    assert torch_reqs and all(_norm(r) != "torch" for r in torch_reqs)
    assert "torch==" in (ROOT / "Makefile").read_text()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in commands
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
