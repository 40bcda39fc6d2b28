"""The plugin API: ``clustercore.plugin`` and ``clustercore.testing`` as docs/plugins.md describes them.

Every hook specification and every public name must have its heading in
docs/plugins.md (hooks with their exact parameters), and the API does what the
page says: ``serves`` dispatch, ``report_launched`` from a manager written only
against ``clustercore.plugin``, ``worker_lost`` failing the calls in flight with
the plugin's reason.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

import clustercore as cc
import clustercore.plugin
import clustercore.testing
from clustercore.engine.hooks import PROJECT, HookSpecs
from clustercore.plugin import (
    ClusterManager,
    WorkerConfig,
    cluster_cookie,
    hookimpl,
    report_launched,
    serves,
    worker_command,
    worker_environment,
    worker_lost,
)
from clustercore.testing import WorkerInfo, clean_cluster, pid_alive, wait_removed, wait_until_gone, worker_info

PLUGINS_MD = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
REASON = "OOMKilled (exit code 137)"


# --- the page covers the API ---------------------------------------------------------------


def _headings() -> list[str]:
    return [line.lstrip("#").strip() for line in PLUGINS_MD.read_text().splitlines() if line.startswith("### ")]


def _documented(name: str) -> list[str]:
    """The headings of docs/plugins.md that document ``name`` (``### `name...`` )."""
    return [h for h in _headings() if re.match(rf"`{re.escape(name)}\b(?![.])", h)]


def _hook_specs() -> dict[str, inspect.Signature]:
    specs = {}
    for name, member in inspect.getmembers(HookSpecs, inspect.isfunction):
        if hasattr(member, f"{PROJECT}_spec"):
            specs[name] = inspect.signature(member)
    return specs


def test_hook_specs_are_found() -> None:
    assert {"launch", "manage", "kill", "connect", "manager_types", "cli_commands"} <= set(_hook_specs())


@pytest.mark.parametrize("hook", sorted(_hook_specs()))
def test_every_hook_is_documented_with_its_exact_parameters(hook: str) -> None:
    headings = _documented(hook)
    assert headings, f"docs/plugins.md has no '### `{hook}(...)`' heading for the hook {hook!r}"
    expected = [p for p in _hook_specs()[hook].parameters if p != "self"]
    written = re.match(rf"`{hook}\(([^)]*)\)", headings[0])
    assert written is not None, f"the heading of {hook!r} shows no parameters: {headings[0]!r}"
    params = [p.split(":")[0].split("=")[0].strip() for p in written.group(1).split(",") if p.strip()]
    assert params == expected, f"docs/plugins.md shows {hook}({', '.join(params)}), the spec is {expected}"


@pytest.mark.parametrize("name", sorted(clustercore.plugin.__all__))
def test_every_plugin_name_is_documented(name: str) -> None:
    assert _documented(name), f"clustercore.plugin.{name} has no '### `{name}`' heading in docs/plugins.md"


@pytest.mark.parametrize("name", sorted(clustercore.testing.__all__))
def test_every_testing_name_is_documented(name: str) -> None:
    assert _documented(name), f"clustercore.testing.{name} has no '### `{name}`' heading in docs/plugins.md"


def test_the_public_names_exist() -> None:
    for module in (clustercore.plugin, clustercore.testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ names {name!r}, which it lacks"


def test_the_failure_checklist_is_there() -> None:
    text = PLUGINS_MD.read_text()
    assert "## Failures a plugin must diagnose" in text
    for case in ("before printing its address", "Wrong Python", "Unreachable host", "mid-call", "scheduler"):
        assert case in text, f"the failure checklist lacks {case!r}"


# --- serves --------------------------------------------------------------------------------


class _Mine(ClusterManager):
    pass


class _MineToo(_Mine):
    pass


def test_serves_answers_for_its_class_and_subclasses_only() -> None:
    seen: list[tuple[type, int, str]] = []

    @serves(_Mine)
    def manage(manager: _Mine, id: int, config: WorkerConfig, op: str) -> None:
        seen.append((type(manager), id, op))

    @serves(_Mine)
    def kill(manager: _Mine, pid: int, config: WorkerConfig) -> bool:
        return False  # a result other than None is passed on as it is

    assert manage(ClusterManager(), 2, WorkerConfig(), "register") is None
    assert manage(_Mine(), 2, WorkerConfig(), "register") is True
    assert manage(_MineToo(), 3, WorkerConfig(), op="finalize") is True
    assert seen == [(_Mine, 2, "register"), (_MineToo, 3, "finalize")]
    assert kill(_Mine(), 2, WorkerConfig()) is False
    by_name: Any = kill  # typed positional (Concatenate), but a test may name every argument
    assert by_name(manager=_Mine(), pid=2, config=WorkerConfig()) is False
    assert by_name(manager=ClusterManager(), pid=2, config=WorkerConfig()) is None
    assert manage.__name__ == "manage" and list(inspect.signature(manage).parameters) == [
        "manager",
        "id",
        "config",
        "op",
    ]


def test_serves_in_a_plugin_manager_leaves_other_managers_to_other_plugins() -> None:
    class Mine:
        @hookimpl
        @serves(_Mine)
        def kill(manager: _Mine, pid: int, config: WorkerConfig) -> None:  # type: ignore[misc]
            calls.append(("mine", pid))

    class Fallback:
        @hookimpl(trylast=True)
        def kill(manager: ClusterManager, pid: int, config: WorkerConfig) -> bool:  # type: ignore[misc]
            calls.append(("fallback", pid))
            return True

    calls: list[tuple[str, int]] = []
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(HookSpecs)
    pm.register(Fallback, name="fallback")
    pm.register(Mine, name="mine")
    pm.check_pending()  # serves keeps the hook's name and parameters: pluggy matches them to the spec
    assert pm.hook.kill(manager=_Mine(), pid=2, config=WorkerConfig()) is True
    assert pm.hook.kill(manager=ClusterManager(), pid=3, config=WorkerConfig()) is True
    assert calls == [("mine", 2), ("fallback", 3)]


def test_serves_finds_the_manager_whatever_its_place_among_the_parameters() -> None:
    # pluggy calls an implementation with its own parameters, in its own order
    class Mine:
        @hookimpl
        @serves(_Mine)
        def kill(pid: int, config: WorkerConfig, manager: _Mine) -> str:  # type: ignore[misc]
            return f"mine {pid}"

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(HookSpecs)
    pm.register(Mine, name="mine")
    assert pm.hook.kill(manager=_Mine(), pid=2, config=WorkerConfig()) == "mine 2"
    assert pm.hook.kill(manager=ClusterManager(), pid=3, config=WorkerConfig()) is None
    with pytest.raises(TypeError, match="no 'manager' parameter"):
        serves(_Mine)(lambda pid, config: None)


def test_a_served_connect_that_returns_nothing_is_an_error_naming_it() -> None:
    @serves(_Mine)
    def connect(manager: _Mine, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
        return None  # type: ignore[return-value]

    assert connect(ClusterManager(), 2, WorkerConfig()) is None
    with pytest.raises(TypeError, match=r"connect returned None for its _Mine.*default_connect"):
        connect(_Mine(), 2, WorkerConfig())


# --- a manager written only against clustercore.plugin ----------------------------------------


class SubprocessManager(ClusterManager):
    """Julia's LocalManager in a few lines of user code: ``clustercore worker`` processes,
    reported one by one, the cookie on stdin; the core's default connect and kill."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.processes: list[subprocess.Popen[bytes]] = []
        self.reported_from: set[str] = set()

    def launch(self, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: threading.Condition) -> None:
        for _ in range(self.n):
            process = subprocess.Popen(
                worker_command(params, bind_to="127.0.0.1"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**__import__("os").environ, **worker_environment(params)},
                start_new_session=True,
            )
            assert process.stdin is not None
            process.stdin.write((cluster_cookie() + "\n").encode())
            process.stdin.close()
            self.processes.append(process)
            self.reported_from.add(threading.current_thread().name)
            report_launched(launched, launch_ntfy, WorkerConfig(io=process.stdout, process=process))

    def manage(self, id: int, config: WorkerConfig, op: str) -> None:
        pass


@pytest.fixture
def clean() -> Iterator[list[WorkerInfo]]:
    with clean_cluster() as joined:
        yield joined


def test_report_launched_from_a_user_defined_manager(clean: list[WorkerInfo]) -> None:
    manager = SubprocessManager(3)
    pids = cc.addprocs(manager)
    assert pids == sorted(pids) and len(pids) == 3 and cc.workers() == pids
    assert manager.reported_from == {"clustercore-launch"}
    ospids = sorted(p.pid for p in manager.processes)
    assert sorted(cc.remotecall_fetch(__import__("os").getpid, p) for p in pids) == ospids
    assert [worker_info(p).config.process for p in pids] == manager.processes  # type: ignore[union-attr]
    assert cc.remotecall_fetch(lambda q: cc.remotecall_fetch(cc.myid, q), pids[0], pids[2]) == pids[2]
    cc.rmprocs(pids, waitfor=30)
    assert wait_until_gone(ospids) == []
    assert all(p.returncode is not None for p in manager.processes)  # the default kill reaped them


def test_report_launched_appends_and_wakes_the_waiter() -> None:
    launched: list[WorkerConfig] = []
    ntfy = threading.Condition()
    configs = [WorkerConfig(host="h", port=i) for i in range(3)]

    def report_all() -> None:
        for config in configs:
            report_launched(launched, ntfy, config)

    reporter = threading.Thread(target=report_all)
    with ntfy:
        reporter.start()
        assert ntfy.wait_for(lambda: len(launched) == 3, timeout=10)
    reporter.join()
    assert launched == configs


# --- worker_lost --------------------------------------------------------------------------


def _announce_then_sleep(started: cc.RemoteChannel) -> None:
    started.put(cc.myid())
    time.sleep(120)


def _in_flight(call: str, pid: int) -> tuple[threading.Thread, list[BaseException]]:
    """Another thread inside ``call`` on worker ``pid``, once the call runs there."""
    started = cc.RemoteChannel()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            if call == "remotecall_fetch":
                cc.remotecall_fetch(_announce_then_sleep, pid, started)
            else:
                cc.remotecall(_announce_then_sleep, pid, started).fetch()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            failures.append(exc)

    thread = threading.Thread(target=run, name=f"in-{call}", daemon=True)
    thread.start()
    assert started.take() == pid  # the call runs on the worker: the thread waits for its reply
    return thread, failures


@pytest.mark.parametrize("call", ["remotecall_fetch", "remotecall.fetch"])
def test_worker_lost_fails_the_call_in_flight_with_the_plugins_reason(call: str, clean: list[WorkerInfo]) -> None:
    (pid,) = cc.addprocs(1)
    ospid = worker_info(pid).ospid
    thread, failures = _in_flight(call, pid)
    worker_lost(pid, REASON)
    thread.join(30)
    assert not thread.is_alive(), f"{call} still waits on a lost worker"
    (exc,) = failures
    assert isinstance(exc, cc.ProcessExitedException) and exc.worker_id == pid
    assert REASON in str(exc), f"the caller saw {exc!r}, not the plugin's reason"
    assert wait_removed([pid], 10) == [] and pid not in cc.procs()
    with pytest.raises(cc.ProcessExitedException, match=re.escape(REASON)):
        cc.remotecall_fetch(cc.myid, pid)
    assert wait_until_gone([ospid], 30) == [], "the lost worker's process was not ended (kill follows worker_lost)"


def test_worker_lost_twice_and_for_unknown_pids_is_harmless(clean: list[WorkerInfo]) -> None:
    (pid,) = cc.addprocs(1)
    worker_lost(pid, REASON)
    worker_lost(pid, "a second, later reason")
    worker_lost(10_000, "nobody")
    with pytest.raises(cc.ProcessExitedException, match=re.escape(REASON)):
        cc.remotecall_fetch(cc.myid, pid)


# --- clustercore.testing ----------------------------------------------------------------------


def test_clean_cluster_records_the_workers_that_joined() -> None:
    with clean_cluster() as joined:
        pids = cc.addprocs(2)
        assert [w.pid for w in joined] == pids
        assert all(w.ospid and pid_alive(w.ospid) and w.config is not None for w in joined)
    assert cc.procs() == [1] and not any(pid_alive(w.ospid) for w in joined)


def test_service_missing_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no frobnicator"):
        clustercore.testing.skip_unless_service(False, "no frobnicator: run `make frob`")
    clustercore.testing.skip_unless_service(True, "not raised")
    for value in ("true", "1", "yes"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match=r"no frobnicator.*CI is set"):
            clustercore.testing.service_missing("no frobnicator")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        clustercore.testing.service_missing("no frobnicator")


def test_launch_params_are_addprocs_defaults() -> None:
    params = clustercore.testing.launch_params(exeflags=("-X", "dev"))
    assert params["exeflags"] == ("-X", "dev") and params["topology"] == "all_to_all" and params["env"] is None
    with pytest.raises(TypeError, match="frob"):
        clustercore.testing.launch_params(frob=1)


# --- what the plugins in this repository import -------------------------------------------

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
ALLOWED = {"clustercore", "clustercore.plugin"}
ALLOWED_IN_TESTS = ALLOWED | {"clustercore.testing"}


def _clustercore_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of clustercore or one of its modules in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "clustercore":  # `from clustercore import calls` imports a module too
                names += [f"clustercore.{a.name}" for a in node.names if a.name not in cc.__all__]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == "clustercore" or n.startswith("clustercore.")]
    return found


@pytest.mark.parametrize("plugin", sorted(p.name for p in PLUGINS.iterdir() if (p / "pyproject.toml").is_file()))
def test_plugins_import_only_the_public_api(plugin: str) -> None:
    """import-linter checks the plugins' packages in `make lint`; this checks their tests too."""
    wrong = []
    for path in sorted((PLUGINS / plugin).rglob("*.py")):
        where = path.relative_to(PLUGINS)
        allowed = ALLOWED_IN_TESTS if "tests" in where.parts else ALLOWED
        wrong += [f"{where}:{line}: {name}" for line, name in _clustercore_imports(path) if name not in allowed]
    assert wrong == [], "plugins may import clustercore, clustercore.plugin (and in tests clustercore.testing) only"
