"""Every distribution (the core and each plugin) as it is declared: inline types (PEP 561), license,
classifiers, the core pinned by minor version, and every import of its tests in its `test` extra."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = [ROOT, *sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))]


@pytest.mark.parametrize("project", DISTRIBUTIONS, ids=lambda p: p.name)
def test_each_distribution_ships_py_typed_in_its_wheel(project: Path) -> None:
    config = tomllib.loads((project / "pyproject.toml").read_text())
    package = config["project"]["name"].replace("-", "_")
    assert (project / package / "py.typed").is_file()
    # setuptools puts a non-Python file in the wheel only when package-data names it
    assert "py.typed" in config["tool"]["setuptools"]["package-data"][package]


def test_the_cores_assets_are_package_data() -> None:
    # A file under clustercore/_assets (the trace page) is in the wheel and the sdist only if
    # package-data names it (checked once by building both: pip wheel, build_meta.build_sdist).
    import fnmatch

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["clustercore"]
    assets = [p.relative_to(ROOT / "clustercore").as_posix() for p in (ROOT / "clustercore" / "_assets").rglob("*")]
    assert "_assets/trace.html" in assets
    for asset in assets:
        assert any(fnmatch.fnmatch(asset, pattern) for pattern in patterns), asset


def test_every_plugin_is_checked() -> None:
    assert {p.name for p in DISTRIBUTIONS[1:]} >= {"local", "ssh", "slurm", "k8s"}


# Which distribution's tests each folder holds (bench/ is in the core's testpaths).
SUITES = {ROOT / "tests": ROOT, ROOT / "bench": ROOT} | {p / "tests": p for p in DISTRIBUTIONS[1:]}
# Modules a test writes itself before importing them.
WRITTEN_BY_TESTS = {"cc_nearby"}
# Peers the benchmark measures when they are installed and skips with a note when not.
OPTIONAL_PEERS = {"ray"}


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _declared(project: Path, *extras: str) -> set[str]:
    """Distributions project declares as dependencies or in extras, plus what the core declares (all need it)."""
    config = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    names = {config["name"]} | _requirement_names(config.get("dependencies", []))
    for extra in extras:
        names |= _requirement_names(config.get("optional-dependencies", {}).get(extra, []))
    return names if project == ROOT else names | _declared(ROOT)


def _imported(folder: Path) -> set[str]:
    """Top-level names of the absolute imports in folder's Python files."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.partition(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names


def _local_modules(folder: Path) -> set[str]:
    """What imports from the test folders themselves (and tests/services, on pytest's pythonpath)."""
    names = {"tests", "bench"}
    for base in (folder, ROOT / "tests" / "services"):
        names |= {p.stem for p in base.rglob("*.py")} | {p.parent.name for p in base.rglob("__init__.py")}
    return names


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_test_import_is_declared_by_its_distribution(suite: Path) -> None:
    project = SUITES[suite]
    declared = _declared(project, "test", *(["bench"] if suite.name == "bench" else []))
    owners = importlib.metadata.packages_distributions()
    local = _local_modules(suite) | WRITTEN_BY_TESTS | OPTIONAL_PEERS
    undeclared = {}
    for name in _imported(suite) - set(sys.stdlib_module_names) - local:
        dists = {d.lower().replace("_", "-") for d in owners.get(name, [name.replace("_", "-")])}
        if not dists & declared:
            undeclared[name] = sorted(dists)
    assert not undeclared, f"{project / 'pyproject.toml'}: declare these in its `test` extra: {undeclared}"


@pytest.mark.parametrize("project", DISTRIBUTIONS, ids=lambda p: p.name)
def test_each_distribution_carries_the_license_and_its_classifiers(project: Path) -> None:
    config = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert (config["license"], config["license-files"]) == ("MIT", ["LICENSE"])
    assert (project / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert {"Programming Language :: Python :: 3.11", "Operating System :: POSIX :: Linux"} <= set(
        config["classifiers"]
    )
    assert {"Topic :: System :: Distributed Computing", "Typing :: Typed"} <= set(config["classifiers"])


def test_each_plugin_pins_the_cores_minor_version() -> None:
    major, minor, *_ = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"].split(".")
    pin = f"clustercore>={major}.{minor},<{major}.{int(minor) + 1}"
    for project in DISTRIBUTIONS[1:]:
        assert pin in tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"], project
