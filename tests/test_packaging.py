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


def _sltk_imports(path: Path, modules: set[str]) -> set[str]:
    """The sltk modules a module imports, at its top or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            elif node.module == "sltk":
                names = [a.name for a in node.names]
            elif node.module and node.module.startswith("sltk."):
                names = [node.module.split(".")[1]]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("sltk.")]
        else:
            continue
        found.update(n for n in names if n in modules and n != path.stem)
    return found


def test_no_module_imports_another_in_a_cycle():
    package = Path(__file__).resolve().parents[1] / "sltk"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    graph = {m: _sltk_imports(package / f"{m}.py", modules) for m in modules}
    cycles = []

    def visit(node, path):
        for dep in sorted(graph[node]):
            if dep == path[0]:
                cycles.append(" -> ".join(path + [dep]))
            elif dep not in path and dep > path[0]:  # each cycle once, from its smallest name
                visit(dep, path + [dep])

    for m in sorted(modules):
        visit(m, [m])
    assert cycles == []
