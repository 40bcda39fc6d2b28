"""Everything a cluster-manager plugin may use from clustercore, and nothing else.

A plugin is a distribution with an entry point in the group ``clustercore``
naming a module of :data:`hookimpl` functions (see ``docs/plugins.md``). Its
code imports ``clustercore`` (the user API) and this module only; its tests may
also use :mod:`clustercore.testing`. Every name here is documented and kept
stable; anything else in the core may change without notice.

The life of a worker, as a manager sees it:

1. ``launch``: start processes; describe each with a :class:`WorkerConfig` and
   hand it over with :func:`report_launched`. The process runs
   :func:`worker_command` in :func:`worker_environment` and reads the cookie
   (:func:`cluster_cookie`) from the first line of its stdin.
2. ``connect``: the core's default reads the worker's address line from
   ``config.io`` (:func:`read_worker_address`) and dials it
   (:func:`connect_to_worker`); a plugin with its own transport returns its own
   ``(instream, outstream)``.
3. ``manage``: ``"register"``, ``"interrupt"``, ``"deregister"``, ``"finalize"``.
4. ``kill``: :func:`request_exit` first, then end the process the plugin's way.

When a plugin learns first that a worker is gone (its pod was OOMKilled, its
job step failed), :func:`worker_lost` tells the core, and every call waiting on
that worker raises ``ProcessExitedException`` with the plugin's reason.
"""

from __future__ import annotations

import functools
import inspect
import socket
import threading
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from .engine.cluster import cluster_cookie, worker_secret, worker_timeout
from .engine.hooks import HookSpecs, hookimpl
from .engine.launches import LaunchNotify, cancelled_event, on_cancel
from .engine.launching import (
    ADDRESS_LINE,
    LINK_DESCRIPTORS,
    WorkerConfig,
    default_connect,
    emit_worker_output,
    end_process,
    forward_worker_output,
    parse_address_line,
    read_worker_host_port,
    reserve_descriptors,
    worker_command,
    worker_environment,
)
from .engine.managers import ClusterManager
from .engine.peers import lose_worker
from .engine.requests import remote_exit
from .engine.worker import preload_modules as preload_worker_modules
from .errors import LaunchCancelled, ProcessExitedException
from .links import dial
from .wire.handshake import local_versions

__all__ = [
    "ADDRESS_LINE",
    "LINK_DESCRIPTORS",
    "ClusterManager",
    "HookSpecs",
    "LaunchCancelled",
    "ProcessExitedException",
    "WorkerConfig",
    "cluster_cookie",
    "connect_to_worker",
    "default_connect",
    "emit_worker_output",
    "end_process",
    "forward_worker_output",
    "hookimpl",
    "launch_cancelled",
    "on_launch_cancelled",
    "parse_address_line",
    "preload_worker_modules",
    "read_worker_address",
    "report_launched",
    "request_exit",
    "reserve_descriptors",
    "serves",
    "versions",
    "worker_command",
    "worker_environment",
    "worker_lost",
    "worker_secret",
    "worker_timeout",
]

M = TypeVar("M", bound=ClusterManager)
P = ParamSpec("P")
R = TypeVar("R")


def serves(
    manager_class: type[M],
) -> Callable[[Callable[Concatenate[M, P], R]], Callable[Concatenate[ClusterManager, P], R | bool | None]]:
    """Make a hook implementation answer only for ``manager_class`` (and its subclasses).

    Hooks are called for every manager; the first implementation that returns
    something other than ``None`` wins. Under ``@serves(MyManager)`` a hook is
    written for its own manager type alone: for any other manager it returns
    ``None`` (so other plugins answer), and a body that returns ``None`` itself
    counts as handled (``True``), except in ``connect``, which must return its
    streams (``TypeError`` otherwise; :func:`default_connect` is the core's way)::

        @hookimpl
        @serves(MyManager)
        def launch(manager: MyManager, params, launched, launch_ntfy) -> None:
            ...
    """

    def decorate(
        hook: Callable[Concatenate[M, P], R],
    ) -> Callable[Concatenate[ClusterManager, P], R | bool | None]:
        names = list(inspect.signature(hook).parameters)
        if "manager" not in names:
            raise TypeError(f"@serves: {hook.__qualname__} has no 'manager' parameter to dispatch on")
        at = names.index("manager")  # pluggy passes arguments by position, in the hook's own order

        @functools.wraps(hook)
        def dispatch(*args: Any, **kwargs: Any) -> R | bool | None:
            manager = args[at] if at < len(args) else kwargs.get("manager")
            if not isinstance(manager, manager_class):
                return None
            result = hook(*args, **kwargs)
            if result is not None:
                return result
            if hook.__name__ == "connect":  # True is no pair of streams: fail here, naming the plugin
                raise TypeError(
                    f"{hook.__module__}.connect returned None for its {type(manager).__name__}: return "
                    "(instream, outstream), default_connect(pid, config) for the core's way"
                )
            return True

        return cast("Callable[Concatenate[ClusterManager, P], R | bool | None]", dispatch)

    return decorate


def report_launched(launched: list[WorkerConfig], launch_ntfy: threading.Condition, config: WorkerConfig) -> None:
    """Hand one started worker to the core (from ``launch``; any thread).

    The core starts connecting to it at once, while ``launch`` goes on starting
    others: Julia's ``push!(launched, wconfig); notify(launch_ntfy)``. Once the
    launch is cancelled (:func:`launch_cancelled`), the core ends ``config``'s worker
    instead and this raises :class:`LaunchCancelled`: stop, end what you started and
    have not reported, and return.
    """
    if isinstance(launch_ntfy, LaunchNotify):
        launch_ntfy.report(launched, config)
        return
    with launch_ntfy:
        launched.append(config)
        launch_ntfy.notify_all()


def launch_cancelled(launch_ntfy: threading.Condition) -> threading.Event:
    """The event ``addprocs`` sets when it gives up on this launch (another part failed, a
    timeout, the caller's Ctrl-C): wait on it where ``launch`` would sleep, check it between
    steps, and when it is set end what you started and return. Never set for a plain
    ``Condition`` (a test calling ``launch`` itself)."""
    return cancelled_event(launch_ntfy)


def on_launch_cancelled(launch_ntfy: threading.Condition, callback: Callable[[], Any]) -> None:
    """Call ``callback()`` once when the launch is cancelled (at once if it already is), on
    the thread that cancels it: to wake a wait on your own condition or to close a
    connection a thread is blocked on. It must not block."""
    on_cancel(launch_ntfy, callback)


def connect_to_worker(host: str, port: int, timeout: float | None = None) -> socket.socket:
    """A TCP connection to a worker, with keepalive (a vanished host is noticed in about a
    minute); a ``ConnectionError`` naming the address if it fails. ``timeout`` defaults to
    :func:`worker_timeout`."""
    return dial.connect_to_worker(host, port, worker_timeout() if timeout is None else timeout)


def read_worker_address(pid: int, config: WorkerConfig, timeout: float | None = None) -> tuple[str, int]:
    """The ``(host, port)`` worker ``pid`` printed on ``config.io``; the rest of what it
    prints is forwarded as ``From worker N:`` lines. Waits at most ``timeout`` seconds
    (default :func:`worker_timeout`): ``TimeoutError``, or ``ConnectionError`` if the
    stream ended first, each quoting what the worker printed."""
    return read_worker_host_port(pid, config, timeout)


def request_exit(pid: int) -> None:
    """Ask worker ``pid`` to exit by itself: the first rung of every ``kill``. Returns at
    once; a worker that is already gone is no error. Whether it exits is for the plugin
    to watch (its process, job step or pod)."""
    remote_exit(pid)


def worker_lost(pid: int, reason: str) -> None:
    """Tell the core that worker ``pid`` is gone and why (``"OOMKilled (exit code 137)"``).

    Its link is closed, it leaves ``workers()`` and every call or reference waiting on
    it raises ``ProcessExitedException`` carrying ``reason``, whoever reads the link's
    end first. Unknown or already removed pids are ignored, so a plugin may call this
    from its watch and its link monitor alike.
    """
    lose_worker(pid, reason)


def versions() -> tuple[int, int, int]:
    """``(wire protocol, Python major, Python minor)`` of this installation: what a worker
    elsewhere must match to join (for a plugin that checks a host before launching)."""
    return local_versions()
