"""Plugin hooks (pluggy): specifications, discovery, and the facade the core calls.

A plugin is a module of ``@hookimpl`` functions named by an entry point in
the group ``clustercore``. Hooks are dispatched on the manager: a plugin's
implementation returns ``None`` for managers that are not its own, and the
first non-``None`` result wins. Plugins are discovered lazily, on the first
``addprocs`` (never on ``import clustercore``), and loaded one at a time as
they are needed; a plugin that fails to import gives a warning naming it
and the others still load.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from threading import Condition
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .launching import WorkerConfig
    from .managers import ClusterManager

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
    """The one plugin manager; built-in hooks are registered like external ones.

    Entry points are loaded one by one as they are needed: ``addprocs("name")``
    loads the plugin of that name first (``addprocs(4)`` loads only ``local``),
    and everything else (listing, a manager class no loaded plugin provides)
    loads them all.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._pm: pluggy.PluginManager | None = None
        self._entry_points: dict[str, Any] | None = None
        self._tried: set[str] = set()
        self._types: dict[str, type[ClusterManager]] = {}
        self.infos: list[PluginInfo] = []

    @property
    def pm(self) -> pluggy.PluginManager:
        with self._lock:
            if self._pm is None:
                pm = pluggy.PluginManager(PROJECT)
                pm.add_hookspecs(HookSpecs)
                self._pm = pm
            return self._pm

    def _found(self) -> dict[str, Any]:
        if self._entry_points is None:
            import importlib.metadata

            self._entry_points = {}
            for ep in importlib.metadata.entry_points(group=PROJECT):
                self._entry_points.setdefault(ep.name, ep)
        return self._entry_points

    def load(self, name: str) -> None:
        """Load the plugin registered under ``name``, if there is one and it is not loaded."""
        with self._lock:
            ep = self._found().get(name)
            if ep is None or name in self._tried:
                return
            self._tried.add(name)
            pm = self.pm
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                module = ep.load()
                if pm.get_plugin(name) is None and not pm.is_registered(module):
                    pm.register(module, name=name)
                pm.check_pending()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
                warnings.warn(
                    f"clustercore plugin {name!r} ({dist} {version}) failed to load: {exc!r}",
                    RuntimeWarning,
                    stacklevel=5,
                )
                self.infos.append(PluginInfo(name, dist, version, ep.value, repr(exc)))
                return
            self.infos.append(PluginInfo(name, dist, version, ep.value))
            for mapping in pm.hook.manager_types():
                self._types.update(mapping)

    def load_all(self) -> None:
        with self._lock:
            for name in list(self._found()):
                self.load(name)

    def manager_types(self, everything: bool = True) -> dict[str, type[ClusterManager]]:
        if everything:
            self.load_all()
        with self._lock:
            return dict(self._types)

    def serving(self, manager: ClusterManager) -> pluggy.PluginManager:
        """The plugin manager, with every plugin loaded unless ``manager``'s class is the
        core's own or one that a loaded plugin provides."""
        with self._lock:
            provided = tuple(self._types.values())
            core_class = type(manager).__module__.partition(".")[0] == PROJECT
            if not core_class and not (provided and isinstance(manager, provided)):
                self.load_all()
            return self.pm


PLUGINS = _Plugins()


def plugin_manager() -> pluggy.PluginManager:
    """The plugin manager with every installed plugin loaded."""
    PLUGINS.load_all()
    return PLUGINS.pm


def manager_types() -> dict[str, type[ClusterManager]]:
    """Every installed manager class, by name."""
    return PLUGINS.manager_types()


def manager_class(name: str) -> type[ClusterManager] | None:
    """The manager class named ``name``, loading no more plugins than it takes to find it."""
    PLUGINS.load(name)
    found = PLUGINS.manager_types(everything=False).get(name)
    return found if found is not None else PLUGINS.manager_types().get(name)


def manager_name(manager: ClusterManager | None) -> str:
    """The name ``manager``'s class is registered under (``"local"``, ``"ssh"``, ...), looking
    only at the plugins loaded already (a worker's plugin is, once it has joined); else the
    class's name; ``""`` for no manager (the driver, or a worker as its peers know it)."""
    if manager is None:
        return ""
    types = PLUGINS.manager_types(everything=False)
    name = next((n for n, cls in types.items() if type(manager) is cls), "")
    return name or next((n for n, cls in types.items() if isinstance(manager, cls)), type(manager).__name__)


def installed_plugins() -> list[PluginInfo]:
    PLUGINS.load_all()
    return list(PLUGINS.infos)


def answer(name: str, manager: ClusterManager, **kwargs: Any) -> Any:
    """The first plugin's answer to hook ``name`` for ``manager``; ``None`` if no plugin
    answers (the caller then does what Julia's default does)."""
    return getattr(PLUGINS.serving(manager).hook, name)(manager=manager, **kwargs)


def cli_commands() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for mapping in plugin_manager().hook.cli_commands():
        found.update(mapping)
    return found
