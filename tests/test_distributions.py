"""The five distributions as pip users get them.

Each distribution (the core and every plugin) is built with ``python -m build`` (an sdist, and
a wheel from that sdist) from a copy of its directory, so a build writes nothing into the
checkout. The five wheels go into a fresh virtual environment (not the project's, no editable
installs), the Local plugin's with its ``test`` extra (pytest, pytest-timeout). There
``clustercore managers`` must list every plugin through their entry points, and the Local
plugin's tests must pass against the installed packages, run from a directory outside the
checkout. Every subprocess is bounded by a timeout.

pip may use the network (PyPI) and its cache. Without network the tests skip, saying so;
under ``CI`` any failure to build or install fails them.
"""

from __future__ import annotations

import contextlib
import email.parser
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import NoReturn

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = {"local", "ssh", "slurm", "k8s", "elastic"}
SOURCES = [ROOT, *sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))]
CLASSIFIERS = {
    "Programming Language :: Python :: 3.11",
    "Operating System :: POSIX :: Linux",
    "Topic :: System :: Distributed Computing",
    "Typing :: Typed",
}
# What pip prints when it cannot reach an index: then, outside CI, the tests skip.
OFFLINE = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Could not fetch URL",
    "ProxyError",
    "No matching distribution found",
)
BUILD_SECONDS = 300  # all five builds, side by side
VENV_SECONDS = 120
INSTALL_SECONDS = 400
LOCAL_TESTS_SECONDS = 300


@dataclass(frozen=True)
class Distribution:
    source: Path
    name: str
    version: str
    package: str  # the import name

    @classmethod
    def read(cls, source: Path) -> Distribution:
        project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
        name = project["name"]
        return cls(source, name, project["version"], name.replace("-", "_"))

    def built(self, outdir: Path, suffix: str) -> Path:
        (path,) = outdir.glob(f"{self.package}-{self.version}{suffix}")
        return path


DISTRIBUTIONS = [Distribution.read(source) for source in SOURCES]
CORE = DISTRIBUTIONS[0]


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that would put the checkout or its venv on a path."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env = {k: v for k, v in env.items() if not k.startswith("CLUSTERCORE_")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def _fail_or_skip(what: str, output: str) -> NoReturn:
    detail = f"{what}:\n{output[-6000:]}"
    if os.environ.get("CI"):
        pytest.fail(f"{detail}\n(CI is set: packaging must work)", pytrace=False)
    offline = [line.strip() for line in output.splitlines() if any(sign in line for sign in OFFLINE)]
    if offline:
        pytest.skip(f"{what}, apparently without network (pip needs PyPI or its cache): {offline[0][:300]}")
    pytest.fail(detail, pytrace=False)


def _start(cmd: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """cmd in a session of its own, its output to log (a file: no pipe a stray grandchild could hold open)."""
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of proc's session (a no-op once it has ended and been waited for)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _run(cmd: list[str], what: str, timeout: float, cwd: Path, env: dict[str, str]) -> str:
    """Run cmd to its end within timeout (then its session is killed and the test fails); its output."""
    log = cwd / f".{Path(cmd[0]).name}-{time.monotonic_ns()}.log"
    proc = _start(cmd, log, cwd, env)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: no end after {timeout} s\n{log.read_text(errors='replace')[-6000:]}", pytrace=False)
    finally:
        _end(proc)
    output = log.read_text(errors="replace")
    log.unlink()
    if proc.returncode != 0:
        _fail_or_skip(f"{what} failed (exit {proc.returncode})", output)
    return output


def _copy_source(dist: Distribution, to: Path) -> Path:
    """The distribution's directory without what builds and tests leave there (and, for the core, the plugins)."""
    skip = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", "build", "dist", ".*_cache")

    def ignore(directory: str, names: list[str]) -> set[str]:
        top = Path(directory) == dist.source
        return set(skip(directory, names)) | ({"plugins"} if top and dist is CORE else set())

    return Path(shutil.copytree(dist.source, to / dist.name, ignore=ignore))


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The five wheels and sdists, each built by ``python -m build`` as a user would."""
    if importlib.util.find_spec("build") is None:
        _fail_or_skip("the `build` package is missing from this environment", "`make setup` installs it (dev extra)")
    work = tmp_path_factory.mktemp("build")
    outdir = work / "dist"
    started: list[tuple[Distribution, subprocess.Popen[bytes], Path]] = []
    try:
        for dist in DISTRIBUTIONS:
            source = _copy_source(dist, work / "src")
            log = work / f"{dist.name}.log"
            cmd = [sys.executable, "-m", "build", "--outdir", str(outdir), str(source)]
            started.append((dist, _start(cmd, log, work, _clean_env()), log))
        deadline = time.monotonic() + BUILD_SECONDS
        for dist, proc, log in started:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"building {dist.name}: no end after {BUILD_SECONDS} s\n{log.read_text()[-6000:]}")
            if proc.returncode != 0:
                _fail_or_skip(f"`python -m build` of {dist.name} failed", log.read_text(errors="replace"))
    finally:
        for _, proc, _ in started:
            _end(proc)
    return outdir


@pytest.fixture(scope="module")
def venv(dist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the five wheels (the Local plugin's with its test extra).

    This environment's pip installs into it (``pip --python``): the same files as the new
    environment's own pip would install, without the ~15 s of ``ensurepip``.
    """
    home = tmp_path_factory.mktemp("venv")
    path = home / "venv"
    create = [sys.executable, "-m", "venv", "--without-pip", str(path)]
    _run(create, "creating a virtual environment", VENV_SECONDS, home, _clean_env())
    wheels = [str(d.built(dist_dir, "-py3-none-any.whl")) for d in DISTRIBUTIONS]
    wheels = [
        f"{w}[test]" if d.package == "clustercore_local" else w for d, w in zip(DISTRIBUTIONS, wheels, strict=True)
    ]
    pip = [sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install", "-q", *wheels]
    _run(pip, "installing the wheels", INSTALL_SECONDS, home, _clean_env())
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory outside the checkout, so that the checkout is not on ``sys.path``."""
    assert not tmp_path.resolve().is_relative_to(ROOT)
    return tmp_path


def _metadata(text: str) -> Message:
    return email.parser.Parser().parsestr(text)


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda d: d.name)
def test_the_wheel_carries_readme_license_version_classifiers_and_pin(dist: Distribution, dist_dir: Path) -> None:
    with zipfile.ZipFile(dist.built(dist_dir, "-py3-none-any.whl")) as wheel:
        info = f"{dist.package}-{dist.version}.dist-info"
        names = set(wheel.namelist())
        assert f"{info}/licenses/LICENSE" in names
        assert f"{dist.package}/py.typed" in names
        assert dist is not CORE or "clustercore/_assets/trace.html" in names  # trace()'s page, package data
        assert not any(n.startswith("tests/") for n in names)
        meta = _metadata(wheel.read(f"{info}/METADATA").decode())
    assert (meta["Name"], meta["Version"]) == (dist.name, dist.version)
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.11"
    assert set(meta.get_all("Classifier") or []) >= CLASSIFIERS
    assert meta["Description-Content-Type"] == "text/markdown"
    assert str(meta.get_payload()).strip() == (dist.source / "README.md").read_text().strip()
    requires = meta.get_all("Requires-Dist") or []
    if dist is not CORE:
        assert "clustercore<0.2,>=0.1" in requires, requires


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=lambda d: d.name)
def test_the_sdist_carries_readme_license_and_the_tests(dist: Distribution, dist_dir: Path) -> None:
    base = f"{dist.package}-{dist.version}"
    with tarfile.open(dist.built(dist_dir, ".tar.gz")) as sdist:
        names = set(sdist.getnames())
        assert {f"{base}/{n}" for n in ("README.md", "LICENSE", "pyproject.toml", "PKG-INFO")} <= names
        assert dist is not CORE or f"{base}/clustercore/_assets/trace.html" in names
        member = sdist.extractfile(f"{base}/PKG-INFO")
        assert member is not None
        assert _metadata(member.read().decode())["Version"] == dist.version
    tests = (dist.source / "tests").rglob("*")
    shipped = {p.relative_to(dist.source) for p in tests if p.is_file() and "__pycache__" not in p.parts}
    assert {f"{base}/{p}" for p in shipped if not p.name.endswith(".pyc")} <= names


def test_clustercore_managers_lists_every_plugin(venv: Path, outside: Path) -> None:
    out = _run([str(venv / "bin" / "clustercore"), "managers"], "clustercore managers", 60, outside, _clean_env())
    header, *rows = (line.split() for line in out.splitlines() if line.strip())
    assert header == ["name", "distribution", "version", "managers"], out
    listed = {(name, dist, version, managers) for name, dist, version, managers in rows}
    expected = {(d.source.name, d.name, d.version, d.source.name) for d in DISTRIBUTIONS if d.source.name in PLUGINS}
    assert listed == expected, out


def test_the_packages_come_from_the_wheels_not_the_checkout(venv: Path, outside: Path) -> None:
    code = (
        "import importlib, importlib.metadata as md, json, sys\n"
        f"names = {[(d.name, d.package) for d in DISTRIBUTIONS]!r}\n"
        "print(json.dumps({n: [importlib.import_module(p).__file__, md.distribution(n).read_text('direct_url.json')]\n"
        "                  for n, p in names}))\n"
    )
    out = _run(
        [str(venv / "bin" / "python"), "-c", code], "importing the installed packages", 60, outside, _clean_env()
    )
    found = json.loads(out.splitlines()[-1])
    for name, (file, direct_url) in found.items():
        assert Path(file).is_relative_to(venv), (name, file)
        assert not json.loads(direct_url).get("dir_info", {}).get("editable"), (name, direct_url)


def test_the_local_plugin_tests_pass_against_the_installed_packages(venv: Path, outside: Path) -> None:
    source = ROOT / "plugins" / "local" / "tests"
    tests = Path(shutil.copytree(source, outside / "tests", ignore=shutil.ignore_patterns("__pycache__")))
    (outside / "pytest.ini").write_text(
        "[pytest]\ntimeout = 120\nfaulthandler_timeout = 100\nmarkers =\n    slow: takes more than a few seconds\n"
    )
    cmd = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)]
    out = _run(cmd, "the Local plugin's tests in the fresh environment", LOCAL_TESTS_SECONDS, outside, _clean_env())
    assert re.search(r"\b\d+ passed\b", out) and " failed" not in out, out
