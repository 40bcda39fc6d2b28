"""Every distribution (the core and each plugin) ships its inline types (PEP 561)."""

from __future__ import annotations

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


def test_every_plugin_is_checked() -> None:
    assert {p.name for p in DISTRIBUTIONS[1:]} >= {"local", "ssh", "slurm", "k8s"}
