"""Pickling for the wire: cloudpickle, protocol 5, large buffers out of band.

Functions defined in ``__main__``, lambdas and closures travel by value
(cloudpickle). Contiguous buffers of at least ``OUT_OF_BAND_MIN`` bytes (numpy
arrays, and ``bytes``/``bytearray`` objects among a message's top two levels)
are not copied into the pickle: they are returned beside it and sent as
separate frame buffers.
"""

from __future__ import annotations

import importlib
import io
import pickle
import re
import threading
import types
from typing import Any, SupportsIndex

_cloudpickle: Any = None  # imported on first use: a worker that only unpickles never needs it


def _cloudpickle_module() -> Any:
    global _cloudpickle, _should_pickle_by_reference
    if _cloudpickle is None:
        import cloudpickle

        try:  # cloudpickle's own rule for "importable, so by reference"; checked in tests
            from cloudpickle.cloudpickle import _should_pickle_by_reference
        except ImportError:  # pragma: no cover - a future cloudpickle: always take the safe path
            _should_pickle_by_reference = None
        _cloudpickle = cloudpickle
    return _cloudpickle


_should_pickle_by_reference: Any = None

OUT_OF_BAND_MIN = 64 * 1024
_SCAN_ITEMS = 64  # containers longer than this are not searched: the C pickler handles them well


class _LargeBytes:
    """Carries a ``bytes``/``bytearray`` out of band (the pickler keeps exact ones in band)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        return type(self.data), (pickle.PickleBuffer(self.data),)


_CONTAINERS = (bytes, bytearray, tuple, list, dict)


def _wrap_large_bytes(obj: Any, depth: int = 2) -> Any:
    kind = type(obj)
    if kind is bytes or kind is bytearray:
        return _LargeBytes(obj) if len(obj) >= OUT_OF_BAND_MIN else obj
    if depth == 0 or (kind in (tuple, list, dict) and len(obj) > _SCAN_ITEMS):
        return obj  # large containers are not searched (their bytes stay in band)
    if kind is tuple or kind is list:
        if any(type(x) in _CONTAINERS for x in obj):
            return kind(_wrap_large_bytes(x, depth - 1) for x in obj)
    elif kind is dict and any(type(v) in _CONTAINERS for v in obj.values()):
        return {k: _wrap_large_bytes(v, depth - 1) for k, v in obj.items()}
    return obj


class _ReusablePickler:
    """One cloudpickle pickler per thread, reset between messages (saves its set-up cost)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.buffers: list[memoryview] = []
        self.busy = False
        self.pickler = _cloudpickle_module().Pickler(self.out, protocol=5, buffer_callback=self._take_buffer)

    def _take_buffer(self, buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True  # a true value means: keep it in band
        self.buffers.append(raw)
        return False

    def dump(self, obj: Any) -> tuple[bytes, list[memoryview]]:
        self.busy = True
        try:
            self.pickler.dump(obj)
            return self.out.getvalue(), self.buffers
        finally:  # drop every reference the pickler took: the memo keeps objects alive
            self.pickler.clear_memo()
            self.pickler.globals_ref.clear()
            self.out.seek(0)
            self.out.truncate()
            self.buffers = []
            self.busy = False


_local = threading.local()

# --- the fast path: plain data and importable functions need no cloudpickle -----------

_ATOMS = frozenset({type(None), bool, int, float, complex, str})
_by_reference: dict[Any, bool] = {}
_plain_types: set[type] = set()


def register_plain_type(cls: type) -> type:
    """Mark a class whose instances pickle to plain data (its ``__reduce__`` needs no cloudpickle)."""
    _plain_types.add(cls)
    return cls


def _importable(obj: Any) -> bool:
    known = _by_reference.get(obj)
    if known is None:
        _cloudpickle_module()
        known = bool(_should_pickle_by_reference is not None and _should_pickle_by_reference(obj))
        if len(_by_reference) < 4096:
            _by_reference[obj] = known
    return known


def _plain(obj: Any, depth: int = 6) -> bool:
    """Whether the stock C pickler gives the same result as cloudpickle, with no large bytes."""
    kind = type(obj)
    if kind in _ATOMS or kind in _plain_types:
        return True
    if kind is bytes or kind is bytearray:
        return len(obj) < OUT_OF_BAND_MIN
    if kind is tuple or kind is list:
        if depth == 0 or len(obj) > _SCAN_ITEMS:
            return False
        for item in obj:
            if type(item) not in _ATOMS and not _plain(item, depth - 1):
                return False
        return True
    if kind is dict:
        if depth == 0 or len(obj) > _SCAN_ITEMS:
            return False
        for key, value in obj.items():
            if type(key) not in _ATOMS or (type(value) not in _ATOMS and not _plain(value, depth - 1)):
                return False
        return True
    if kind is types.FunctionType or kind is type:
        return _importable(obj)
    if kind is types.BuiltinFunctionType:
        owner = getattr(obj, "__self__", None)
        return owner is None or isinstance(owner, types.ModuleType)
    return kind.__module__ == "numpy" and kind.__name__ == "ndarray" and not obj.dtype.hasobject


def _dump_plain(obj: Any) -> tuple[bytes, list[memoryview]] | None:
    buffers: list[memoryview] = []

    def keep_large(buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True
        buffers.append(raw)
        return False

    try:
        return pickle.dumps(obj, protocol=5, buffer_callback=keep_large), buffers
    except (pickle.PicklingError, TypeError, AttributeError):
        return None


def dumps(obj: Any) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj``; returns the payload and the out-of-band buffers."""
    if _plain(obj):
        done = _dump_plain(obj)
        if done is not None:
            return done
    obj = _wrap_large_bytes(obj)
    pickler = getattr(_local, "pickler", None)
    if pickler is None:
        pickler = _local.pickler = _ReusablePickler()
    elif pickler.busy:  # a __reduce__ that pickles again: use a fresh one
        pickler = _ReusablePickler()
    return pickler.dump(obj)


_SMALL_ATOMS = frozenset({type(None), bool, int, float})


def dumps_call(call: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> tuple[bytes, list[memoryview]]:
    """:func:`dumps` of a call ``(f, args, kwargs)``, quicker for an importable function of numbers."""
    f, args, kwargs = call
    if not kwargs and type(f) is types.FunctionType and _by_reference.get(f):
        for arg in args:
            if type(arg) not in _SMALL_ATOMS:
                break
        else:
            return pickle.dumps(call, protocol=5), []
    return dumps(call)


def loads(payload: Any, buffers: list[Any] = ()) -> Any:  # type: ignore[assignment]
    """Inverse of :func:`dumps`.

    Unpickling may import a module for the first time (numpy, on a new worker). Two
    threads importing a package with circular imports at once can break it for good
    ("partially initialized module", "deadlock detected"), so unpickling here goes one
    thread at a time. An unpickle that takes longer than ``UNPICKLE_WAIT`` (one that
    blocks in user code) stops holding the others back: they go on without the lock.
    """
    locked = _UNPICKLING.acquire(timeout=UNPICKLE_WAIT)
    try:
        try:
            return pickle.loads(payload, buffers=buffers)
        except (ImportError, RuntimeError) as exc:
            package = _raced_import(exc)  # a user thread importing it outside this lock
            if package is None:
                raise
        importlib.import_module(package)
        return pickle.loads(payload, buffers=buffers)
    finally:
        if locked:
            _UNPICKLING.release()


UNPICKLE_WAIT = 10.0
_UNPICKLING = threading.RLock()
_RACED_IMPORT = re.compile(r"(?:partially initialized module |_ModuleLock\()'([\w.]+)'")


def _raced_import(exc: BaseException) -> str | None:
    """The top-level package whose import another thread was in the middle of, if that is
    why ``exc`` was raised."""
    match = _RACED_IMPORT.search(str(exc))
    return match.group(1).split(".")[0] if match else None
