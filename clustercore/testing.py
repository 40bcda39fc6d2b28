"""What a plugin's tests need: the manager conformance suite and the fixtures around it.

A plugin's tests subclass :class:`ManagerConformance` and provide the
``make_manager`` fixture (a function ``n -> ClusterManager`` for ``n``
workers); pytest then runs every ``test_*`` below against that manager::

    from clustercore.testing import ManagerConformance

    class TestLocalConformance(ManagerConformance):
        @pytest.fixture
        def make_manager(self):
            return lambda n: LocalManager(np=n)

Override :meth:`ManagerConformance.process_alive` when workers live where this
process cannot see their pids (another host), and
:meth:`ManagerConformance.bad_manager_arguments` to list constructor calls that
must fail before anything is launched.

Around it (``docs/plugins.md`` shows a whole ``conftest.py``):

- :func:`ship_test_modules_by_value` (a fixture; autouse once imported into a
  ``conftest.py``) and :func:`ship_by_value`: workers cannot import test modules.
- :func:`clean_cluster` (a context manager) and :func:`fresh_cluster` (the
  fixture made of it): no workers before; afterwards every worker removed and
  every process of this host it ran as exited.
- :func:`skip_unless_service` / :func:`service_missing`: a test that needs a
  service (sshd, Slurm, an API server) skips without it, and fails when ``CI``
  is set.
- :func:`wait_until_gone`, :func:`pid_alive`: leak checks by pid;
  :func:`wait_removed`: until the core has forgotten workers.
- :func:`worker_info`: what the core knows of a worker (its config, its link).
- :func:`worker_output`, :func:`watch_worker_output`: the forwarded output.
- :func:`launch_params`, :func:`installed_plugins`, :func:`manager_types`,
  :func:`cli_commands`, :func:`running_driver`, :func:`protocol_sitecustomize`.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any, NoReturn

import cloudpickle
import pytest

import clustercore as cc
from clustercore import processes
from clustercore.engine import cluster, hooks, launching
from clustercore.engine.hooks import PluginInfo
from clustercore.plugin import (
    ClusterManager,
    WorkerConfig,
    report_launched,
    worker_command,
    worker_environment,
    worker_secret,
)
from clustercore.processes import GENERIC_PARAMS
from clustercore.wire.transport import socket_of


def pid_alive(ospid: int) -> bool:
    """Whether a process of this machine runs (a zombie does not)."""
    try:
        with open(f"/proc/{ospid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def tagged_processes(tag: str) -> list[int]:
    """The live processes of this machine whose environment or command line holds ``tag``
    (give workers a tag with ``addprocs(..., env={"SOME_NAME": tag})``; a shell that has
    not yet exported it shows it on its command line). This process is never among them."""
    needle = tag.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for part in ("environ", "cmdline"):
            try:
                with open(f"/proc/{entry}/{part}", "rb") as f:
                    if needle in f.read():
                        found.append(int(entry))
                        break
            except OSError:
                break  # gone meanwhile, or not ours to read
    return [p for p in found if pid_alive(p)]


def wait_until_gone(ospids: list[int], timeout: float = 10.0) -> list[int]:
    """The os pids still alive after ``timeout`` seconds.

    It polls /proc: there is no event for the exit of a process that is not
    our child.
    """
    deadline = time.monotonic() + timeout
    alive = [p for p in ospids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if pid_alive(p)]
    return alive


class OutputLog:
    """Forwarded worker output lines, collected as they are printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, text: str) -> None:
        with self._changed:
            self.lines.append(text)
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 15.0) -> bool:
        """Whether a line containing ``text`` was printed within ``timeout`` seconds."""
        return self.wait(lambda: any(text in line for line in self.lines), timeout)

    def of(self, pid: int, text: str) -> list[str]:
        """The lines worker ``pid`` printed that contain ``text``."""
        with self._changed:
            return [line for line in self.lines if line.startswith(f"From worker {pid}:\t") and text in line]

    def wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Whether ``ready()`` held within ``timeout`` seconds (checked as lines come)."""
        with self._changed:
            return self._changed.wait_for(ready, timeout)


@contextmanager
def watch_worker_output(watcher: Callable[[str], None]) -> Iterator[None]:
    """Call ``watcher(line)`` for every forwarded worker line (``"From worker N:\\t..."``)
    while the block runs, in the thread that forwards it and before it is printed: a
    watcher that blocks holds that output up as a stuck stdout would."""
    launching.output_watchers.append(watcher)
    try:
        yield
    finally:
        launching.output_watchers.remove(watcher)


@contextmanager
def worker_output() -> Iterator[OutputLog]:
    """Collect the worker output printed while the block runs (no race with stdout capture)."""
    log = OutputLog()
    with watch_worker_output(log):
        yield log


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def service_missing(why: str) -> NoReturn:
    """End the test because a service it needs is missing: a skip saying ``why`` (name the
    service and the command that starts it), or, when the environment variable ``CI`` is
    set (to anything but ``""``, ``0``, ``false``, ``no``), a failure: in CI, missing
    infrastructure must not pass as a green run."""
    if _ci():
        pytest.fail(f"{why} (CI is set: a missing service is a failure)", pytrace=False)
    pytest.skip(why)


def skip_unless_service(available: bool, why: str) -> None:
    """:func:`service_missing` unless ``available``."""
    if not available:
        service_missing(why)


def ship_by_value(*modules: ModuleType) -> None:
    """Send the functions and classes defined in ``modules`` by value, as ``__main__``'s travel:
    a worker cannot import a test module (nor, on a host without pytest, this one). Once per
    module and process; calling it again is harmless."""
    for module in modules:
        if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.register_pickle_by_value(module)


@pytest.fixture(autouse=True)
def ship_test_modules_by_value(request: pytest.FixtureRequest) -> None:
    """Each test's module, and this one (the conformance suite's functions), travel by value.

    Import it into a ``conftest.py`` (``from clustercore.testing import
    ship_test_modules_by_value``): there it applies to every test below it."""
    ship_by_value(request.module, sys.modules[__name__])


@dataclass(frozen=True)
class WorkerInfo:
    """What this process knows of one worker (see :func:`worker_info`)."""

    pid: int
    hostname: str  #: where it runs, as ``socket.gethostname()`` says there
    ospid: int  #: its process id on that host (0 if not known here)
    connect_at: Any  #: the address other workers dial, usually ``(host, port)``
    config: WorkerConfig | None  #: the ``WorkerConfig`` its manager reported (on pid 1 only)
    manager: ClusterManager | None  #: the manager that launched it (on pid 1 only)
    link: socket.socket | None  #: this process's socket to it; ``None`` if not connected or not a socket
    tls: bool = False  #: whether this process's link to it is encrypted (a cluster that uses TLS)


def worker_info(pid: int) -> WorkerInfo:
    """What this process knows of worker ``pid`` (on the driver or on a worker); ``ValueError``
    for an unknown pid, ``ProcessExitedException`` for one that is gone."""
    w = cluster.worker_from_id(pid)
    conn = w.conn
    sock = socket_of(conn.transport) if conn is not None else None
    return WorkerInfo(
        pid=w.id,
        hostname=w.hostname,
        ospid=w.ospid,
        connect_at=w.connect_at,
        config=w.config,
        manager=w.manager,
        link=sock if isinstance(sock, socket.socket) else None,
        tls=conn is not None and getattr(conn.transport, "encrypted", False),
    )


def wait_removed(pids: list[int], timeout: float = 30.0) -> list[int]:
    """Those of ``pids`` the core still counts as workers after ``timeout`` seconds; waits on
    the core's own event for each (for a worker whose end a plugin reported, or that died)."""
    deadline = time.monotonic() + timeout
    left = []
    for pid in pids:
        try:
            w = cluster.worker_from_id(pid)
        except (ValueError, cc.ProcessExitedException):
            continue
        if not w.gone.wait(max(0.0, deadline - time.monotonic())):
            left.append(pid)
    return left


_recorders: list[list[WorkerInfo]] = []
_recording_lock = threading.Lock()
_listening = False


def _record_joined(pid: int) -> None:
    with _recording_lock:
        if not _recorders:
            return
        try:
            info = worker_info(pid)
        except (ValueError, cc.ProcessExitedException):
            return
        for joined in _recorders:
            joined.append(info)


@contextmanager
def clean_cluster(timeout: float = 30.0, *, check_processes: bool = True) -> Iterator[list[WorkerInfo]]:
    """Run a block with no workers before, and none after.

    Yields the list of the workers that join while the block runs (a :class:`WorkerInfo`
    each, recorded as they join). Before: ``AssertionError`` if a worker exists already.
    After: the workers still there are removed (``rmprocs(..., waitfor=timeout)``) and,
    with ``check_processes``, every recorded worker that ran on this host must have exited
    within ``timeout`` seconds. Workers elsewhere are for the caller to check (their
    ``hostname`` and ``ospid`` are recorded)."""
    global _listening
    assert cc.nprocs() == 1, f"workers left over from an earlier test: {cc.workers()}"
    joined: list[WorkerInfo] = []
    with _recording_lock:
        if not _listening:
            cluster.on_worker_joined(_record_joined)
            _listening = True
        _recorders.append(joined)
    try:
        yield joined
    finally:
        with _recording_lock:
            _recorders.remove(joined)
        if cc.nprocs() > 1:
            cc.rmprocs(cc.workers(), waitfor=timeout)
    if check_processes:
        here = socket.gethostname()
        mine = [w.ospid for w in joined if w.ospid and w.hostname == here]
        left = wait_until_gone(mine, timeout)
        assert left == [], f"worker processes outlived their test: os pids {left}"


@pytest.fixture
def fresh_cluster() -> Iterator[list[WorkerInfo]]:
    """:func:`clean_cluster` as a fixture: yields the workers that joined during the test."""
    with clean_cluster() as joined:
        yield joined


def launch_params(**overrides: Any) -> dict[str, Any]:
    """The ``params`` a manager's ``launch`` gets from ``addprocs(manager, **overrides)``: for
    tests that call a plugin's launch code (building a command, a pod spec) directly."""
    unknown = set(overrides) - set(GENERIC_PARAMS)
    if unknown:
        raise TypeError(f"not launch parameters: {', '.join(sorted(unknown))}")
    return {**GENERIC_PARAMS, **overrides}


def installed_plugins() -> list[PluginInfo]:
    """Every installed plugin, loaded: ``name``, ``distribution``, ``version``, ``module``, and
    ``error`` (why it failed to load; ``""`` if it loaded), as ``clustercore managers`` lists them."""
    return hooks.installed_plugins()


def manager_types() -> dict[str, type[ClusterManager]]:
    """Every installed manager class, by the name ``addprocs("name")`` takes."""
    return hooks.manager_types()


def cli_commands() -> dict[str, Callable[[list[str]], int]]:
    """The ``clustercore`` subcommands the installed plugins add, by name."""
    return hooks.cli_commands()


def protocol_sitecustomize(version: int) -> str:
    """Source of a ``sitecustomize.py`` that makes a clustercore started with it on its
    ``PYTHONPATH`` claim wire protocol ``version``: to test how a plugin reports a host
    whose clustercore speaks another protocol."""
    return f"import clustercore.wire.handshake as h\nh.PROTOCOL_VERSION = {int(version)}\n"


@contextmanager
def running_driver(setup: str, timeout: float = 60.0) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """Run a driver script in a process of its own, for tests that kill it.

    ``setup`` is Python source that ends with ``report`` bound to a list of os
    pids; once the driver has printed them, this yields the driver process and
    that list. The driver then sleeps until it is killed (here, at the end).
    """
    script = f"{textwrap.dedent(setup)}\nprint(*report, flush=True)\nimport time\ntime.sleep(600)\n"
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        timer = threading.Timer(timeout, driver.kill)  # a driver that never reports ends the wait
        timer.start()
        try:
            line = driver.stdout.readline()
        finally:
            timer.cancel()
        yield driver, [int(p) for p in line.split()]
    finally:
        driver.kill()
        driver.wait()


LEAK_TAG_VARIABLE = "CLUSTERCORE_TEST_LAUNCH_TAG"


class _Interrupter:
    """Ctrl-C for ``addprocs``, as a user at a terminal gives it: SIGINT to the main thread
    after a delay. It raises ``KeyboardInterrupt`` only while ``addprocs`` runs (a SIGINT that
    comes after it returned is counted as late and dropped), so the test knows for sure
    whether the caller got pids."""

    def __init__(self) -> None:
        self.late = 0
        self.sent_at = 0.0
        self._main = threading.main_thread().ident

    def handler(self, signum: int, frame: FrameType | None) -> None:
        inside = frame is None  # None: re-delivered by clustercore after a section that held it
        while frame is not None and not inside:
            inside = frame.f_code is _ADDPROCS_CODE
            frame = frame.f_back
        if inside:
            raise KeyboardInterrupt
        self.late += 1

    def send(self) -> None:
        self.sent_at = time.monotonic()
        assert self._main is not None
        signal.pthread_kill(self._main, signal.SIGINT)


_ADDPROCS_CODE = processes.addprocs.__code__


def _whereabouts() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def _cmdline(ospid: int) -> str:
    try:
        with open(f"/proc/{ospid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def _spin_forever() -> None:
    while True:
        pass


class TCPWorkers(ClusterManager):
    """``n`` ``clustercore worker`` processes on this host, on 127.0.0.1, that the driver
    dials over TCP with the core's default connect, as it dials SSH, Slurm and Kubernetes
    workers (the Local plugin's workers use a Unix socket pair instead, which TLS leaves
    alone). ``secret`` is what the launcher writes first on each worker's stdin."""

    def __init__(self, n: int, secret: Callable[[], str] | None = None) -> None:
        self.n = n
        self.secret = secret
        self.processes: list[subprocess.Popen[bytes]] = []

    def launch(self, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: threading.Condition) -> None:
        for _ in range(self.n):
            process = subprocess.Popen(
                worker_command(params, bind_to="127.0.0.1"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, **worker_environment(params)},
            )
            self.processes.append(process)
            assert process.stdin is not None
            process.stdin.write(((self.secret or worker_secret)() + "\n").encode())
            process.stdin.close()
            report_launched(launched, launch_ntfy, WorkerConfig(io=process.stdout, process=process))

    def manage(self, id: int, config: WorkerConfig, op: str) -> None:
        pass


class ManagerConformance:
    """Behaviours shared by every manager; subclass it in a plugin's tests."""

    nworkers = 2
    addprocs_kwargs: dict[str, Any] = {}
    exit_timeout = 30.0

    @pytest.fixture
    def make_manager(self) -> Callable[[int], cc.ClusterManager]:
        raise NotImplementedError("provide a make_manager fixture returning n -> ClusterManager")

    def bad_manager_arguments(self) -> list[Callable[[], Any]]:
        """Calls that must raise ``ValueError``/``TypeError`` before launching anything."""
        return []

    interrupt_rounds = 8  #: interrupted launches per run (``CLUSTERCORE_INTERRUPT_ROUNDS`` overrides)

    def leftovers(self, tag: str) -> list[str]:
        """What launches whose workers got ``tag`` in their environment left running, described
        (empty: nothing). The default sees the processes of this machine; override it (and
        call it) to add what your manager may leave elsewhere: jobs, pods, connections."""
        return [f"process {p} ({_cmdline(p)})" for p in tagged_processes(tag)]

    def wait_no_leftovers(self, tag: str, timeout: float | None = None) -> list[str]:
        deadline = time.monotonic() + (timeout or self.exit_timeout)
        left = self.leftovers(tag)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)  # processes of others and remote state: no event to wait on
            left = self.leftovers(tag)
        return left

    def process_alive(self, hostname: str, ospid: int) -> bool:
        """Whether a worker process still runs; the default sees only this host."""
        if hostname != socket.gethostname():
            pytest.skip("override process_alive to check processes on other hosts")
        return pid_alive(ospid)

    def wait_gone(self, places: list[tuple[str, int]], timeout: float | None = None) -> list[tuple[str, int]]:
        deadline = time.monotonic() + (timeout or self.exit_timeout)
        alive = [p for p in places if self.process_alive(*p)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)  # another host's processes: no event to wait on
            alive = [p for p in alive if self.process_alive(*p)]
        return alive

    @pytest.fixture
    def workers(self, make_manager: Callable[[int], cc.ClusterManager]) -> Iterator[list[int]]:
        with clean_cluster(self.exit_timeout, check_processes=False) as joined:
            pids = cc.addprocs(make_manager(self.nworkers), **self.addprocs_kwargs)
            yield pids
        assert self.wait_gone([(w.hostname, w.ospid) for w in joined]) == []

    # --- the behaviours ----------------------------------------------------------------

    def test_adds_workers_with_ascending_pids(self, workers: list[int]) -> None:
        assert len(workers) == self.nworkers
        assert workers == sorted(workers) and workers[0] > 1
        assert cc.workers() == workers
        assert [cc.remotecall_fetch(cc.myid, p) for p in workers] == workers

    def test_calls_and_errors(self, workers: list[int]) -> None:
        w = workers[-1]
        assert cc.remotecall_fetch(lambda x, y=1: x * y, w, 6, y=7) == 42
        with pytest.raises(cc.RemoteException) as info:
            cc.remotecall_fetch(lambda: 1 / 0, w)
        assert info.value.pid == w and str(info.value).startswith(f"On worker {w}:")

    def test_output_is_forwarded_with_the_worker_pid(self, workers: list[int]) -> None:
        w = workers[0]
        with worker_output() as out:
            cc.remotecall_fetch(lambda: print("conformance says hi", flush=True), w)
            assert out.wait_for(f"From worker {w}:\tconformance says hi")

    def test_interrupt_stops_the_call_and_the_worker_lives(self, workers: list[int]) -> None:
        w = workers[0]
        fut = cc.remotecall(_spin_forever, w)
        while not cc.remotecall_fetch(lambda: bool(cluster.PGRP.runner.in_user_code), w):
            time.sleep(0.01)  # until the call runs on the worker
        cc.interrupt(w)
        with pytest.raises(cc.RemoteException) as info:
            fut.fetch()
        assert isinstance(info.value.captured.ex, KeyboardInterrupt)
        assert cc.remotecall_fetch(cc.myid, w) == w

    def test_rmprocs_leaves_no_process(self, workers: list[int]) -> None:
        places = [cc.remotecall_fetch(_whereabouts, p) for p in workers]
        cc.rmprocs(workers, waitfor=self.exit_timeout)
        assert cc.procs() == [1]
        assert self.wait_gone(places) == []

    def test_killed_worker_raises_process_exited(self, workers: list[int]) -> None:
        w = workers[0]
        place = cc.remotecall_fetch(_whereabouts, w)
        pending = cc.remotecall(time.sleep, w, 120)
        cc.remote_do(lambda: os.kill(os.getpid(), signal.SIGKILL), w)
        with pytest.raises(cc.ProcessExitedException):
            pending.fetch()
        assert w not in cc.procs()
        assert self.wait_gone([place]) == []

    def test_worker_to_worker_calls(self, workers: list[int]) -> None:
        if len(workers) < 2:
            pytest.skip("needs two workers")
        a, b = workers[0], workers[-1]
        assert cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), a, b) == b
        assert cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), b, a) == a

    def test_interrupted_launch_leaves_nothing(self, make_manager: Callable[[int], cc.ClusterManager]) -> None:
        """Ctrl-C at random moments of ``addprocs`` (seeded: ``CLUSTERCORE_INTERRUPT_SEED``): each
        time the caller gets ``KeyboardInterrupt``, ``workers()`` is as before, and nothing the
        launch started is left (:meth:`leftovers`), or it returned pids."""
        if threading.current_thread() is not threading.main_thread():
            pytest.skip("Ctrl-C arrives only on the main thread")
        seed = int(os.environ.get("CLUSTERCORE_INTERRUPT_SEED") or random.SystemRandom().randrange(1 << 32))
        rounds = int(os.environ.get("CLUSTERCORE_INTERRUPT_ROUNDS") or self.interrupt_rounds)
        print(f"interrupted-launch seed {seed} (CLUSTERCORE_INTERRUPT_SEED={seed} repeats it)")
        rng = random.Random(seed)
        tag = f"cc-launch-{seed:x}-{os.getpid()}"
        kwargs = dict(self.addprocs_kwargs)
        kwargs["env"] = {**(kwargs.get("env") or {}), LEAK_TAG_VARIABLE: tag}
        interrupter = _Interrupter()
        previous = signal.signal(signal.SIGINT, interrupter.handler)
        try:
            with clean_cluster(self.exit_timeout, check_processes=False):
                took = float("inf")
                for _ in range(2):  # how long one launch takes (the first may warm things up)
                    started = time.monotonic()
                    pids = cc.addprocs(make_manager(self.nworkers), **kwargs)
                    took = min(took, time.monotonic() - started)
                    cc.rmprocs(pids, waitfor=self.exit_timeout)
                assert self.wait_no_leftovers(tag) == [], "a removed worker left something behind"
                interrupted, rollbacks = [], []
                for n in range(rounds):
                    delay = rng.uniform(0.0, took * 1.2)
                    timer = threading.Timer(delay, interrupter.send)
                    got: list[int] | None = None
                    timer.start()
                    try:
                        got = cc.addprocs(make_manager(self.nworkers), **kwargs)
                    except KeyboardInterrupt:
                        rollbacks.append(time.monotonic() - interrupter.sent_at)
                        interrupted.append(round(delay, 3))
                    finally:
                        timer.cancel()
                        timer.join()
                    if got is not None:
                        assert cc.workers() == got
                        cc.rmprocs(got, waitfor=self.exit_timeout)
                    assert cc.procs() == [1], f"round {n} (Ctrl-C after {delay:.3f} s): workers left: {cc.workers()}"
                    left = self.wait_no_leftovers(tag)
                    assert left == [], f"round {n} (Ctrl-C after {delay:.3f} s, seed {seed}) left: {left}"
                    assert not [t for t in threading.enumerate() if t.name == "clustercore-launch"]
        finally:
            signal.signal(signal.SIGINT, previous)
        print(
            f"one launch took {took:.3f} s; {len(interrupted)} of {rounds} launches interrupted (at {interrupted} s), "
            f"{rounds - len(interrupted)} done first; rollback after Ctrl-C took at most "
            f"{max(rollbacks, default=0.0):.3f} s"
        )
        assert interrupted, "no launch was interrupted: they all finished before the Ctrl-C"

    def test_bad_arguments_are_rejected_before_launch(self) -> None:
        for bad in self.bad_manager_arguments():
            with pytest.raises((ValueError, TypeError)):
                bad()
        assert cc.procs() == [1]


__all__ = [
    "ManagerConformance",
    "OutputLog",
    "TCPWorkers",
    "WorkerInfo",
    "clean_cluster",
    "cli_commands",
    "fresh_cluster",
    "installed_plugins",
    "launch_params",
    "manager_types",
    "pid_alive",
    "protocol_sitecustomize",
    "running_driver",
    "service_missing",
    "ship_by_value",
    "ship_test_modules_by_value",
    "skip_unless_service",
    "tagged_processes",
    "wait_removed",
    "wait_until_gone",
    "watch_worker_output",
    "worker_info",
    "worker_output",
]
