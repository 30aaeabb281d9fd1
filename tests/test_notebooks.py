"""The numbered notebooks: valid, parameterised, stored without outputs, calling only names that
exist, and executing top to bottom on the real embedded model under the smoke preset."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import nbformat
import pytest

import sltk
from sltk import notebooks

BOOKS = sorted(notebooks.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
REQUIRED = ("00_", "01_", "02_", "03_", "04_", "05_")


def _code(book: Path) -> str:
    """The notebook's code as Python, IPython's magics (`%pip ...`) turned into the calls they make."""
    from IPython.core.inputtransformer2 import TransformerManager

    nb = nbformat.read(book, as_version=4)
    return "\n".join(TransformerManager().transform_cell(c.source) for c in nb.cells if c.cell_type == "code")


def test_the_required_notebooks_exist_in_order():
    names = [b.name for b in BOOKS]
    assert [n[:3] for n in names[: len(REQUIRED)]] == list(REQUIRED), names


@pytest.mark.parametrize("book", BOOKS, ids=lambda b: b.name)
def test_notebook_is_valid_parameterised_and_stripped(book):
    nb = nbformat.read(book, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "starts with a title"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for name in ("PRESET", "RUN_NAME", "RUNS_DIR", "MODEL", "ITERATION", "SLTK_PRESET"):
        assert name in tagged[0].source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit notebooks without outputs"
    ast.parse(_code(book))


def _imported_modules(tree: ast.AST) -> dict[str, object]:
    """Names bound by `import sltk` / `from sltk import x` in the notebook."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "sltk":
                    bound[a.asname or "sltk"] = sltk
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sltk":
            base = importlib.import_module(node.module)
            for a in node.names:
                bound[a.asname or a.name] = getattr(base, a.name, None) or importlib.import_module(
                    f"{node.module}.{a.name}")
    return bound


@pytest.mark.parametrize("book", BOOKS, ids=lambda b: b.name)
def test_every_sltk_name_a_notebook_uses_exists(book):
    tree = ast.parse(_code(book))
    bound = _imported_modules(tree)
    bound["pipe"] = sltk.Pipeline  # the notebooks' run object
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, cur = [], node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id in bound and len(chain) == 1:
                obj = bound[cur.id]
                if obj is sltk.Pipeline:
                    ok = hasattr(obj, chain[0]) or chain[0] in ("folder", "config", "manifest", "progress")
                else:
                    ok = hasattr(obj, chain[0])
                if not ok:
                    missing.append(f"{cur.id}.{chain[0]}")
    assert not missing, f"{book.name} uses names that do not exist: {sorted(set(missing))}"


def test_the_plan_runs_02_once_per_iteration():
    names = [copy for _, _, copy in notebooks.plan(3)]
    assert [n for n in names if n.startswith("02_")] == [f"02_one_iteration_iter{k}.ipynb" for k in (1, 2, 3)]
    assert names[0].startswith("00_") and names[-1].startswith("03_")  # the demo: the loop's notebooks
    assert [c for _, _, c in notebooks.plan(1, prefixes=("04_",))] == ["04_evaluation.ipynb"]
    with pytest.raises(FileNotFoundError, match="No numbered notebooks 07_\\* in .*naming notebooks 00 to 05"):
        notebooks.plan(1, prefixes=("07_",))


def test_sltk_demo_notebooks_picks_the_numbered_ones(monkeypatch, tmp_path):
    from sltk import cli

    seen = {}

    def executed(*args, prefixes, **kwargs):  # stands in for papermill: records what would run, then stops
        seen["prefixes"] = prefixes
        raise RuntimeError("stopped here")

    monkeypatch.setattr(notebooks, "run", executed)
    assert cli.main(["demo", "--notebooks", "05", "--runs-dir", str(tmp_path)]) == 2
    assert seen["prefixes"] == ("05_",)
    assert cli.main(["demo", "--runs-dir", str(tmp_path)]) == 2
    assert seen["prefixes"] == notebooks.LOOP


@pytest.mark.integration
def test_notebooks_execute_top_to_bottom_on_the_smoke_preset(tmp_path, capsys):
    folder = notebooks.run("smoke", "nb", tmp_path, prefixes=(), log=lambda *_: None)  # all, 04 included
    streamed = capsys.readouterr()
    # the kernels' progress bars reach this terminal as they run: counts, rates, time left
    assert re.search(r"train generator: +\d+%.*\d+/\d+ \[", streamed.err), streamed.err[-2000:]
    assert "Kernel is running over TCP" not in streamed.err
    executed = sorted((folder / "notebooks").glob("*.ipynb"))
    assert [p.name for p in executed] == sorted(copy for _, _, copy in notebooks.plan(2, prefixes=()))
    for path in executed:  # every code cell ran, and no library warned
        nb = nbformat.read(path, as_version=4)
        assert all(c.execution_count for c in nb.cells if c.cell_type == "code" and c.source.strip()), path.name
        said = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                       if o.output_type == "stream")
        # also a library's logged warnings that carry no such word (kernels: "Skipping publisher trust check")
        warned = re.findall(r".*(?:Warning|WARNING|IProgress|deprecated|Hugging Face Hub|publisher trust).*", said)
        assert not warned, (path.name, warned[:5])
    manifest = json.loads((folder / "manifest.json").read_text())["steps"]
    assert {"iter_1/queries", "iter_2/train_extender", "eval/answers", "final/dataset", "agentwrite/data",
            "agentwrite/train_generator"} <= set(manifest)
    figures = {p.name for p in (folder / "figures").glob("*.png")}
    assert {"iter1_length_biased.png", "iter2_loss.png", "growth_curve.png", "filter_rates.png",
            "agentwrite_vs_selflengthen.png", "data_lengths_both_ways.png"} <= figures
    growth = (folder / "eval" / "growth.csv").read_text().splitlines()
    # header, base, the control arm, 2 Self-Lengthen Generators, the AgentWrite Generator (notebook 05)
    assert [line.split(",")[0] for line in growth] == ["model", "base", "control", "generator_iter_1",
                                                        "generator_iter_2", "agentwrite"]
    assert len((folder / "bench" / "longbench_write_en" / "results.csv").read_text().splitlines()) == 4
