"""Plugin hooks (pluggy): specifications, discovery, and the facade the core calls.

A plugin is a module of ``@hookimpl`` functions named by an entry point in
the group ``clustercore``. Hooks are dispatched on the manager: a plugin's
implementation returns ``None`` for managers that are not its own, and the
first non-``None`` result wins. Plugins are discovered lazily, on the first
``addprocs`` (never on ``import clustercore``); a plugin that fails to import
gives a warning naming it and the others still load.
"""

from __future__ import annotations

import importlib.metadata
import threading
import warnings
from dataclasses import dataclass
from threading import Condition
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .managers import ClusterManager, WorkerConfig

PROJECT = "clustercore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HookSpecs:
    """The hooks a cluster-manager plugin can implement."""

    @hookspec
    def manager_types(self) -> dict[str, type[ClusterManager]]:  # type: ignore[empty-body]
        """Manager classes this plugin provides, by the name ``addprocs("name")`` uses."""

    @hookspec(firstresult=True)
    def launch(  # type: ignore[empty-body]
        self, manager: ClusterManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition
    ) -> bool | None:
        """Start workers; append one ``WorkerConfig`` per worker to ``launched``, notifying
        ``launch_ntfy`` (held while appending) after each. Return ``True`` when done."""

    @hookspec(firstresult=True)
    def manage(  # type: ignore[empty-body]
        self, manager: ClusterManager, id: int, config: WorkerConfig, op: str
    ) -> bool | None:
        """Called with op ``"register"``, ``"deregister"``, ``"interrupt"``, ``"finalize"``."""

    @hookspec(firstresult=True)
    def kill(self, manager: ClusterManager, pid: int, config: WorkerConfig) -> bool | None:  # type: ignore[empty-body]
        """End worker ``pid``'s process; called once per removed worker."""

    @hookspec(firstresult=True)
    def connect(  # type: ignore[empty-body]
        self, manager: ClusterManager, pid: int, config: WorkerConfig
    ) -> tuple[Any, Any] | None:
        """Return ``(instream, outstream)`` to worker ``pid`` (a socket twice is fastest)."""

    @hookspec
    def cli_commands(self) -> dict[str, Any]:  # type: ignore[empty-body]
        """Extra ``clustercore`` subcommands: name -> ``main(argv: list[str]) -> int``."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str
    error: str = ""


class _Plugins:
    """The one plugin manager; built-in hooks are registered like external ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pm: pluggy.PluginManager | None = None
        self.infos: list[PluginInfo] = []

    @property
    def pm(self) -> pluggy.PluginManager:
        with self._lock:
            if self._pm is None:
                self._pm = self._load()
            return self._pm

    def _load(self) -> pluggy.PluginManager:
        from . import default_manager

        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(HookSpecs)
        pm.register(default_manager, name="clustercore.default")
        for ep in importlib.metadata.entry_points(group=PROJECT):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                module = ep.load()
                if pm.get_plugin(ep.name) is None and not pm.is_registered(module):
                    pm.register(module, name=ep.name)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
                warnings.warn(
                    f"clustercore plugin {ep.name!r} ({dist} {version}) failed to load: {exc!r}",
                    RuntimeWarning,
                    stacklevel=4,
                )
                self.infos.append(PluginInfo(ep.name, dist, version, ep.value, repr(exc)))
                continue
            self.infos.append(PluginInfo(ep.name, dist, version, ep.value))
        pm.check_pending()
        return pm


PLUGINS = _Plugins()


def plugin_manager() -> pluggy.PluginManager:
    return PLUGINS.pm


def manager_types() -> dict[str, type[ClusterManager]]:
    found: dict[str, type[ClusterManager]] = {}
    for mapping in plugin_manager().hook.manager_types():
        found.update(mapping)
    return found


def installed_plugins() -> list[PluginInfo]:
    plugin_manager()
    return list(PLUGINS.infos)


def _first(name: str, manager: ClusterManager, **kwargs: Any) -> Any:
    result = getattr(plugin_manager().hook, name)(manager=manager, **kwargs)
    if result is None:
        raise NotImplementedError(
            f"{type(manager).__name__} does not implement {name!r}: define a {name} method "
            "on it, or install the plugin that provides it"
        )
    return result


def call_launch(manager: ClusterManager, params: dict[str, Any], launched: list[WorkerConfig], ntfy: Condition) -> None:
    _first("launch", manager, params=params, launched=launched, launch_ntfy=ntfy)


def call_manage(manager: ClusterManager, id: int, config: WorkerConfig, op: str) -> None:
    _first("manage", manager, id=id, config=config, op=op)


def call_kill(manager: ClusterManager, pid: int, config: WorkerConfig) -> None:
    _first("kill", manager, pid=pid, config=config)


def call_connect(manager: ClusterManager, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
    return _first("connect", manager, pid=pid, config=config)  # type: ignore[no-any-return]


def cli_commands() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for mapping in plugin_manager().hook.cli_commands():
        found.update(mapping)
    return found
