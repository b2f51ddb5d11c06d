"""The package's shape: installed names under ``mnemoflow.`` only, light faces, modules of bounded size, the wheel."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
"""Import name -> repository folder (``mnemoflow.memory`` -> ``memory``)."""
BARE = {"memory", "nodes", "graphs", "flows"}
HEAVY = ("neo4j", "langgraph", "prefect", "sklearn")
MAX_LINES = 600


def source_files() -> list[Path]:
    files = []
    for folder in PACKAGE_DIRS.values():
        files += [path for path in (ROOT / folder).rglob("*.py") if "node_modules" not in path.parts]
    return sorted(set(files))


def test_every_package_is_listed_for_the_wheel() -> None:
    found = set()
    for package, folder in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            if "node_modules" in relative.parts or (package == "mnemoflow" and relative.parts[:1] and relative.parts[0] in BARE):
                continue
            found.add(".".join((package, *relative.parts)))
    assert found == set(PYPROJECT["tool"]["setuptools"]["packages"])


def _bare_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {name}" for name in names if name.split(".")[0] in BARE]
    return found


def test_nothing_imports_a_bare_layer_name() -> None:
    """`memory`, `nodes`, `graphs` and `flows` are folders of this repository, never import names: from the
    repository's root they would import a second copy of a layer, beside the installed `mnemoflow.*` one."""
    files = source_files() + sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py"))
    files += sorted((ROOT / "infra").rglob("*.py"))
    offenders = [line for path in files for line in _bare_imports(path)]
    assert offenders == []
    assert not BARE & set(sys.modules), "this test run imported a bare layer name"


def test_no_module_is_over_600_lines() -> None:
    sizes = {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines()) for path in source_files()}
    assert {path: lines for path, lines in sizes.items() if lines > MAX_LINES} == {}


def _loaded_after(statement: str) -> list[str]:
    probe = f"import sys\n{statement}\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT / "tests", timeout=120)
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"'))
    return loaded


MECHANISMS = ["comorag", "tme", "gmemory", "experepair", "l2mac"]


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "statement",
    [
        "import mnemoflow.memory.records",
        "import mnemoflow.nodes.registry",
        "import mnemoflow.graphs.spec",
        *(f"import mnemoflow.nodes.{mechanism}.model" for mechanism in MECHANISMS),
        "from mnemoflow.nodes import load_builtin_nodes; load_builtin_nodes()",
        "from mnemoflow.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass",
    ],
    ids=["records", "registry", "graph-spec", *MECHANISMS, "builtin-nodes", "cli-help"],
)
def test_a_light_face_loads_no_driver_langgraph_prefect_or_sklearn(statement: str) -> None:
    assert _loaded_after(statement) == []


@pytest.mark.subprocess
def test_the_backends_load_their_drivers_only_when_used() -> None:
    assert _loaded_after("from mnemoflow.memory import Neo4jStore") == ["neo4j"]
    assert "langgraph" in _loaded_after("from mnemoflow.graphs import GraphRunner")


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_wheel_holds_mnemoflow_only_and_runs_the_demo_outside_the_repository(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = dist.glob("mnemoflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"mnemoflow", wheel.name.split("-py3")[0] + ".dist-info"}
    for shipped in (
        "mnemoflow/memory/records.py",
        "mnemoflow/graphs/library/comorag-qa.yaml",
        "mnemoflow/nodes/comorag/data/the-salt-road.txt",
        "mnemoflow/flows/server/ui/templates/base.html",
        "mnemoflow/flows/server/ui/static/app.css",
        "mnemoflow/py.typed",
    ):
        assert shipped in names, shipped
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    assert not BARE & {path.name for path in site.iterdir()}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The wheel's copy comes first on the path; this environment gives the dependencies.
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "NEO4J_", "OPENAI_"))}
    environment["PYTHONPATH"] = str(site)
    where = subprocess.run(
        [sys.executable, "-c", "import mnemoflow.memory, mnemoflow.nodes.comorag; print(mnemoflow.memory.__file__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=environment,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(site)
    demo = subprocess.run(
        [str(site / "bin" / "mnemoflow"), "demo", "--offline"], capture_output=True, text=True, cwd=elsewhere, env=environment, timeout=600
    )
    assert demo.returncode == 0, demo.stderr
    assert "Indexed 'The Salt Road' in the sqlite store" in demo.stdout and demo.stdout.count("   answer: ") == 3
    assert (elsewhere / ".mnemoflow" / "memory.db").exists()
