"""Pickling for the wire: cloudpickle, protocol 5, large buffers out of band.

Functions defined in ``__main__``, lambdas and closures travel by value
(cloudpickle). Contiguous buffers of at least ``OUT_OF_BAND_MIN`` bytes (numpy
arrays, and ``bytes``/``bytearray`` objects among a message's top two levels)
are not copied into the pickle: they are returned beside it and sent as
separate frame buffers.
"""

from __future__ import annotations

import builtins
import importlib
import io
import itertools
import operator
import pickle
import re
import threading
import types
from collections import OrderedDict
from typing import Any, SupportsIndex

_cloudpickle: Any = None  # imported on first use: a worker that only unpickles never needs it
_LinkPickler: Any = None


def load_cloudpickle() -> None:
    """Import cloudpickle now (it is otherwise imported at the first value that needs it)."""
    _cloudpickle_module()


def _cloudpickle_module() -> Any:
    global _cloudpickle, _should_pickle_by_reference, _LinkPickler
    if _cloudpickle is None:
        import cloudpickle

        try:  # cloudpickle's own rule for "importable, so by reference"; checked in tests
            from cloudpickle.cloudpickle import _should_pickle_by_reference
        except ImportError:  # pragma: no cover - a future cloudpickle: always take the safe path
            _should_pickle_by_reference = None

        class LinkPickler(cloudpickle.Pickler):  # type: ignore[misc]
            """cloudpickle, with functions and classes that travel by value named by their
            id on a link that holds them (``sent``; None: cloudpickle as it is)."""

            sent: CodeSent | None = None
            delta: _Delta | None = None

            def reducer_override(self, obj: Any) -> Any:
                sent = self.sent
                if sent is not None:
                    kind = type(obj)
                    if kind is types.FunctionType:
                        if not _importable(obj):
                            return sent.reduce_function(obj, self, self.delta)  # type: ignore[arg-type]
                    elif isinstance(obj, type) and obj.__module__ != "builtins" and not _importable(obj):
                        return sent.reduce_class(obj, self.delta)  # type: ignore[arg-type]
                return super().reducer_override(obj)

        _LinkPickler = LinkPickler
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
        _cloudpickle_module()
        self.pickler = _LinkPickler(self.out, protocol=5, buffer_callback=self._take_buffer)

    def _take_buffer(self, buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True  # a true value means: keep it in band
        self.buffers.append(raw)
        return False

    def dump(
        self, obj: Any, sent: CodeSent | None = None, delta: _Delta | None = None
    ) -> tuple[bytes, list[memoryview]]:
        self.busy = True
        pickler = self.pickler
        pickler.sent, pickler.delta = sent, delta
        try:
            pickler.dump(obj)
            return self.out.getvalue(), self.buffers
        finally:  # drop every reference the pickler took: the memo keeps objects alive
            pickler.sent = pickler.delta = None
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
    return _pickler().dump(_wrap_large_bytes(obj))


def _pickler() -> _ReusablePickler:
    pickler = getattr(_local, "pickler", None)
    if pickler is None:
        pickler = _local.pickler = _ReusablePickler()
    elif pickler.busy:  # a __reduce__ that pickles again: use a fresh one
        pickler = _ReusablePickler()
    return pickler  # type: ignore[no-any-return]


Pickled = tuple[bytes, list[memoryview], "_Delta | None"]


def dumps_for_link(obj: Any, sent: CodeSent) -> Pickled:
    """:func:`dumps` for one link, whose other end holds the code ``sent`` records: the
    payload, its buffers, and what to :meth:`CodeSent.commit` once the frame is handed
    to the link (None: nothing). Call it holding ``sent.lock`` until then."""
    if _plain(obj):
        done = _dump_plain(obj)
        if done is not None:
            if sent.forget:
                return _wrapped(sent, done, _Delta())
            return done[0], done[1], None
    delta = _Delta()
    done = _pickler().dump(_wrap_large_bytes(obj), sent, delta)
    if delta.defs or sent.forget:
        return _wrapped(sent, done, delta)
    return done[0], done[1], None


def _wrapped(sent: CodeSent, done: tuple[bytes, list[memoryview]], delta: _Delta) -> Pickled:
    return sent.wrap(done[0], delta), done[1], delta


_SMALL_ATOMS = frozenset({type(None), bool, int, float})


def dumps_call(call: tuple[Any, tuple[Any, ...], dict[str, Any]], sent: CodeSent) -> Pickled:
    """:func:`dumps_for_link` of a call ``(f, args, kwargs)``, quicker for a function of
    numbers that is importable or whose code the other end holds."""
    f, args, kwargs = call
    kind = type(f)
    if not kwargs and (kind is types.FunctionType or kind is types.BuiltinFunctionType):
        for arg in args:
            if type(arg) not in _SMALL_ATOMS:
                break
        else:
            if kind is types.BuiltinFunctionType:
                if type(getattr(f, "__self__", None)) is types.ModuleType:  # operator.pos, os.getpid
                    return pickle.dumps(call, protocol=5), [], None
                return dumps_for_link(call, sent)
            known = _by_reference.get(f)
            if known:
                return pickle.dumps(call, protocol=5), [], None
            if known is False and not sent.forget:
                ref = sent.fast_ref(f)
                if ref is not None:
                    return pickle.dumps((ref, args, kwargs), protocol=5), [], None
                with_state = sent.fast_state_ref(f)
                if with_state is not None:  # a closure over numbers, a function reading plain globals
                    done = _dump_plain((with_state, args, kwargs))  # large arrays in it: out of band
                    if done is not None:
                        return done[0], done[1], None
    return dumps_for_link(call, sent)


def loads(payload: Any, buffers: list[Any] = (), held: CodeHeld | None = None) -> Any:  # type: ignore[assignment]
    """Inverse of :func:`dumps` (and, with the link's ``held`` code, of :func:`dumps_for_link`).

    Unpickling may import a module for the first time (numpy, on a new worker). Two
    threads importing a package with circular imports at once can break it for good
    ("partially initialized module", "deadlock detected"), so unpickling here goes one
    thread at a time. An unpickle that takes longer than ``UNPICKLE_WAIT`` (one that
    blocks in user code) stops holding the others back: they go on without the lock.
    """
    locked = _UNPICKLING.acquire(timeout=UNPICKLE_WAIT)
    recv = _recv
    previous = recv.held, recv.buffers
    recv.held, recv.buffers = held, buffers
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
        recv.held, recv.buffers = previous
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


# --- code that travels once per link ---------------------------------------------------
#
# A function or class that pickles by value is sent to a link's other end once, under
# an id, and named by that id afterwards. What an id names never changes: a function's
# id names its code object and names (immutable; compared by identity), a class's id the
# class as it was (its attributes, and the state its methods read, compared by identity);
# anything else makes a new id. What can change between calls goes on every call, as it
# would in a full pickle: a function's closure values, the globals it reads, its
# defaults, its ``__dict__`` and annotations. docs/protocol.md, "Code once per link",
# says why the sender's record (:class:`CodeSent`) never names an id the other end
# lacks: one sender at a time pickles and hands its frame to the link, the record
# gains an id only once the frame that defines it is handed over, and only the
# sender decides what the other end forgets.

CODE_PER_LINK = 256  # ids a sender asks the other end of a link to hold
_FORGET_AT_ONCE = CODE_PER_LINK // 8  # evicted together, so forgetting is rare
HELD_CAP = 4 * CODE_PER_LINK  # the receiver's own bound, against a sender that breaks the rules
_BUILTINS = builtins.__dict__


class _Empty:
    """An empty closure cell's value."""

    def __reduce__(self) -> str:
        return "_EMPTY"


_EMPTY = _Empty()


class _FnRef:
    """Pickles as a reference to a function's code held on the other end (the fast path)."""

    __slots__ = ("reduced",)

    def __init__(self, fid: int) -> None:
        self.reduced = (_fn_ref, (fid,))

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        return self.reduced


class _FnWithState:
    """Pickles as a reference to held code and the function's state (the closure fast path)."""

    __slots__ = ("reduced",)

    def __init__(self, fid: int, state: tuple[Any, ...]) -> None:
        self.reduced = (_fn_ref, (fid,), state, None, None, _fn_setstate)

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        return self.reduced


class _FnEntry:
    __slots__ = ("code", "doc", "fid", "globals", "module", "name", "names", "qualname", "ref")

    def __init__(self, f: types.FunctionType, fid: int) -> None:
        self.code = f.__code__
        self.name, self.qualname, self.module, self.doc = f.__name__, f.__qualname__, f.__module__, f.__doc__
        self.globals = f.__globals__
        self.names = _code_globals(self.code)
        self.fid = fid
        self.ref = _FnRef(fid)

    def matches(self, f: types.FunctionType) -> bool:
        return (
            self.code is f.__code__
            and self.globals is f.__globals__
            and self.name is f.__name__
            and self.qualname is f.__qualname__
            and self.module is f.__module__
            and self.doc is f.__doc__
        )

    def definition(self) -> tuple[Any, ...]:
        base = {k: self.globals[k] for k in ("__package__", "__name__", "__path__", "__file__") if k in self.globals}
        return ("f", self.code, self.name, self.qualname, self.module, self.doc, base)


class _ClassEntry:
    __slots__ = ("cls", "fid", "print")

    def __init__(self, cls: type, fid: int, fingerprint: list[Any]) -> None:
        self.cls = cls
        self.fid = fid
        self.print = fingerprint

    def definition(self) -> tuple[Any, ...]:
        return ("c", self.cls)


class _Delta:
    """What one pickle adds to a :class:`CodeSent` once its frame is handed over."""

    __slots__ = ("defs", "forget", "pending")

    def __init__(self) -> None:
        self.defs: list[tuple[int, Any]] = []  # (key, entry) defined by this frame
        self.pending: dict[int, Any] = {}  # key -> entry, for a second use in the same pickle
        self.forget: list[int] = []  # ids this frame tells the other end to drop


class CodeSent:
    """One end's record of the code it has given the other end of a link to hold.

    Use it under ``lock`` from pickling a frame until the frame is handed to the
    link, then :meth:`commit` (or :meth:`abandon` if it was not)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.entries: OrderedDict[int, Any] = OrderedDict()  # id(code or class) -> entry, oldest first
        self.forget: list[int] = []  # evicted ids the other end still holds
        self._ids = itertools.count(1)

    def fast_ref(self, f: types.FunctionType) -> _FnRef | None:
        """The reference for ``f`` if its code is held there and nothing of it varies per call
        (then it counts as used: the least recently used ids are forgotten first)."""
        code = f.__code__
        key = id(code)
        e = self.entries.get(key)
        if (
            e is None
            or e.names
            or type(e) is not _FnEntry
            or f.__closure__ is not None
            or f.__defaults__ is not None
            or f.__kwdefaults__ is not None
            or f.__dict__
            or f.__annotations__
            or e.code is not code  # _FnEntry.matches, inline
            or e.globals is not f.__globals__
            or e.name is not f.__name__
            or e.qualname is not f.__qualname__
            or e.module is not f.__module__
            or e.doc is not f.__doc__
        ):
            return None
        self.entries.move_to_end(key)
        return e.ref  # type: ignore[no-any-return]

    def fast_state_ref(self, f: types.FunctionType) -> _FnWithState | None:
        """The reference for ``f`` with its state, if its code is held there and its state is
        plain data (the C pickler alone gives what the link pickler would)."""
        key = id(f.__code__)
        e = self.entries.get(key)
        if e is None or type(e) is not _FnEntry or not e.matches(f):
            return None
        state = _function_state(f, e.names)
        if state is None or state[6] is not None or not _plain(state):
            return None
        self.entries.move_to_end(key)
        return _FnWithState(e.fid, state)

    def _entry(self, key: int, delta: _Delta, valid: Any, make: Any) -> Any:
        e = self.entries.get(key)
        if e is not None and valid(e):
            self.entries.move_to_end(key)
            return e
        e = delta.pending.get(key)
        if e is None or not valid(e):
            e = make(next(self._ids))
            delta.pending[key] = e
            delta.defs.append((key, e))
        return e

    def reduce_function(self, f: types.FunctionType, pickler: Any, delta: _Delta) -> Any:
        e = self._entry(id(f.__code__), delta, lambda e: type(e) is _FnEntry and e.matches(f), lambda i: _FnEntry(f, i))
        shared = pickler.globals_ref.setdefault(id(f.__globals__), {})  # one namespace per module, as cloudpickle
        state = _function_state(f, e.names)
        if state is None:
            return _fn_ref, (e.fid, shared)
        return _fn_ref, (e.fid, shared), state, None, None, _fn_setstate

    def reduce_class(self, cls: type, delta: _Delta) -> Any:
        fingerprint = _class_fingerprint(cls)
        e = self._entry(
            id(cls),
            delta,
            lambda e: type(e) is _ClassEntry and e.cls is cls and _same(e.print, fingerprint),
            lambda i: _ClassEntry(cls, i, fingerprint),
        )
        return _class_ref, (e.fid,)

    def wrap(self, payload: bytes, delta: _Delta) -> bytes:
        """The frame's payload with this pickle's definitions and forgotten ids ahead of it."""
        over = len(self.entries) + len(delta.defs) - CODE_PER_LINK
        if over > 0:
            for _ in range(min(max(over, _FORGET_AT_ONCE), len(self.entries))):
                _, old = self.entries.popitem(last=False)
                delta.forget.append(old.fid)
        if self.forget:
            delta.forget += self.forget
            self.forget = []
        defs = [(e.fid, e.definition()) for _, e in delta.defs]
        frame = _cloudpickle_module().dumps(_CodeFrame(defs, delta.forget, payload), protocol=5)
        return frame  # type: ignore[no-any-return]

    def commit(self, delta: _Delta) -> None:
        """The frame is handed to the link: what it defined may be named from now on."""
        entries = self.entries
        for key, e in delta.defs:
            old = entries.get(key)
            if old is not None and old.fid != e.fid:
                self.forget.append(old.fid)  # replaced: the other end may drop it
            entries[key] = e
            entries.move_to_end(key)

    def abandon(self, delta: _Delta) -> None:
        """The frame was not sent: the ids it would have had dropped are still held there."""
        self.forget += delta.forget


class CodeHeld:
    """What the other end of a link has given this end to hold, by id."""

    def __init__(self) -> None:
        self.defs: dict[int, Any] = {}

    def define(self, defs: list[tuple[int, Any]]) -> None:
        held = self.defs
        for fid, definition in defs:
            held.pop(fid, None)
            held[fid] = definition if definition[0] == "f" else definition[1]
        while len(held) > HELD_CAP:  # only a sender that breaks the protocol gets here
            del held[next(iter(held))]

    def forget(self, fids: list[int]) -> None:
        for fid in fids:
            self.defs.pop(fid, None)


class CodeTables:
    """A link's two records: what this end sent, what the other end sent."""

    __slots__ = ("held", "sent")

    def __init__(self) -> None:
        self.sent = CodeSent()
        self.held = CodeHeld()


class _CodeFrame:
    """A frame's definitions and forgotten ids, wrapped around its pickled message."""

    __slots__ = ("defs", "forget", "payload")

    def __init__(self, defs: list[tuple[int, Any]], forget: list[int], payload: bytes) -> None:
        self.defs, self.forget, self.payload = defs, forget, payload

    def __reduce__(self) -> Any:
        return _code_frame, (self.defs, self.forget, self.payload)


class _Receiving(threading.local):
    held: CodeHeld | None = None
    buffers: Any = ()


_recv = _Receiving()


def _held() -> CodeHeld:
    held = _recv.held
    if held is None:
        raise pickle.UnpicklingError("a reference to code held by a link, unpickled outside that link")
    return held


def _code_frame(defs: list[tuple[int, Any]], forget: list[int], payload: bytes) -> Any:
    held = _held()
    held.define(defs)
    value = pickle.loads(payload, buffers=_recv.buffers)
    held.forget(forget)  # after the message, which may name what it drops; kept if it failed
    return value


def _lookup(fid: int) -> Any:
    found = _held().defs.get(fid)
    if found is None:
        raise pickle.UnpicklingError(f"code {fid} is not held on this end of the link")
    return found


def _fn_ref(fid: int, shared: dict[str, Any] | None = None) -> types.FunctionType:
    """A new function made from held code, as unpickling its full pickle would make it."""
    _, code, name, qualname, module, doc, base = _lookup(fid)
    namespace = {} if shared is None else shared
    if "__builtins__" not in namespace:
        namespace.update(base)
        namespace["__builtins__"] = _BUILTINS
    closure = tuple(types.CellType() for _ in code.co_freevars) if code.co_freevars else None
    f = types.FunctionType(code, namespace, name, None, closure)
    f.__qualname__, f.__module__, f.__doc__ = qualname, module, doc
    return f


def _fn_setstate(f: types.FunctionType, state: tuple[Any, ...]) -> None:
    closure_values, globals_used, defaults, kwdefaults, attrs, annotations, _submodules = state
    if globals_used:
        f.__globals__.update(globals_used)
    if closure_values is not None:
        for cell, value in zip(f.__closure__ or (), closure_values, strict=True):
            if value is not _EMPTY:
                cell.cell_contents = value
    f.__defaults__ = defaults
    f.__kwdefaults__ = kwdefaults
    if attrs:
        f.__dict__.update(attrs)
    if annotations:
        f.__annotations__ = annotations


def _class_ref(fid: int) -> type:
    return _lookup(fid)  # type: ignore[no-any-return]


def _function_state(f: types.FunctionType, names: tuple[str, ...]) -> tuple[Any, ...] | None:
    """What of ``f`` may differ from call to call (cloudpickle's ``_function_getstate``
    without the code); None when there is nothing."""
    closure = f.__closure__
    defaults, kwdefaults, attrs, annotations = f.__defaults__, f.__kwdefaults__, f.__dict__, f.__annotations__
    if closure is None and not names and defaults is None and kwdefaults is None and not attrs and not annotations:
        return None
    g = f.__globals__
    globals_used = {k: g[k] for k in names if k in g} if names else None
    closure_values = [_cell_value(c) for c in closure] if closure is not None else None
    submodules = None
    values = [*(globals_used or {}).values(), *(closure_values or ())]
    if any(type(v) is types.ModuleType for v in values):
        from cloudpickle.cloudpickle import _find_imported_submodules

        submodules = _find_imported_submodules(f.__code__, values)
    return closure_values, globals_used, defaults, kwdefaults, dict(attrs) or None, annotations or None, submodules


def _cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:
        return _EMPTY


_code_globals_cache: dict[int, tuple[types.CodeType, tuple[str, ...]]] = {}


def _code_globals(code: types.CodeType) -> tuple[str, ...]:
    """The global names ``code`` (and the code nested in it) may read or write."""
    known = _code_globals_cache.get(id(code))
    if known is not None and known[0] is code:
        return known[1]
    from cloudpickle.cloudpickle import _extract_code_globals

    names = tuple(_extract_code_globals(code))
    if len(_code_globals_cache) >= 4096:
        _code_globals_cache.clear()
    _code_globals_cache[id(code)] = (code, names)
    return names


def _add_function_print(f: types.FunctionType, out: list[Any]) -> None:
    out += (f.__code__, f.__defaults__, f.__kwdefaults__, f.__globals__)
    if f.__closure__:
        out += [_cell_value(c) for c in f.__closure__]
    names = _code_globals(f.__code__)
    if names:
        g = f.__globals__
        out += [g.get(n, _EMPTY) for n in names]


def _class_fingerprint(cls: type) -> list[Any]:
    """Everything a full pickle of ``cls`` would show a change of, by identity: its
    attributes, and the code, closures, defaults and globals of its methods (and so for
    its bases that also travel by value). A value changed in place is not seen."""
    out: list[Any] = [cls.__name__, cls.__qualname__, cls.__bases__]
    for value in list(cls.__dict__.values()):
        out.append(value)
        kind = type(value)
        if kind is types.FunctionType:
            _add_function_print(value, out)
        elif kind is staticmethod or kind is classmethod:
            if type(value.__func__) is types.FunctionType:
                _add_function_print(value.__func__, out)
        elif kind is property:
            for fn in (value.fget, value.fset, value.fdel):
                if type(fn) is types.FunctionType:
                    _add_function_print(fn, out)
    for base in cls.__bases__:
        if base.__module__ != "builtins" and not _importable(base):
            out += _class_fingerprint(base)
    return out


def _same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(map(operator.is_, a, b))
