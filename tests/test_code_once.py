"""Functions and classes that travel by value go once per link (issue 16; docs/protocol.md,
"Code once per link"), with the semantics of pickling them on every call.

This module travels to the workers by value (conftest), so its functions, classes and
globals are the ``__main__`` kind: code by value, globals read from here.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import clustercore as cc
from clustercore.engine.cluster import PGRP
from clustercore.wire import serialize

SCALE = 3
NAMES: list[str] = ["a"]


def scaled(x: int) -> int:
    return x * SCALE


def names_seen() -> list[str]:
    return list(NAMES)


def redefined() -> str:
    return "first"


@dataclasses.dataclass
class Params:
    a: int = 1
    b: float = 2.0
    c: str = "c"
    d: tuple[int, ...] = (1, 2)
    e: int = 5
    f: int = 6
    g: int = 7
    h: int = 8
    i: int = 9
    j: int = 10

    def total(self) -> float:
        return self.a + self.b + self.e * SCALE


def total_of(p: Params) -> float:
    return p.total()


def class_tag(p: Params) -> Any:
    return getattr(type(p), "tag", None)


def held_here() -> int:
    """On a worker: how many ids the driver's link has it hold."""
    from clustercore.engine.cluster import PGRP as pgrp

    tables = pgrp.workers[1].conn.code_tables  # type: ignore[union-attr]
    return 0 if tables is None else len(tables.held.defs)


class Wraps:
    """Counts frames that carry definitions (or forgotten ids) on their way out."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = serialize.CodeSent.wrap

        def wrap(sent: serialize.CodeSent, payload: bytes, delta: Any) -> bytes:
            self.count += 1
            return original(sent, payload, delta)

        monkeypatch.setattr(serialize.CodeSent, "wrap", wrap)


@pytest.fixture
def wraps(monkeypatch: pytest.MonkeyPatch) -> Wraps:
    return Wraps(monkeypatch)


@pytest.fixture
def w(fresh: None) -> int:
    return cc.addprocs(1)[0]


def _sent(pid: int) -> serialize.CodeSent:
    conn = PGRP.workers[pid].conn
    assert conn is not None and conn.code_tables is not None
    return conn.code_tables.sent  # type: ignore[no-any-return]


def test_a_function_travels_once_and_then_by_id(w: int, wraps: Wraps) -> None:
    def noop(x: int) -> int:
        return x

    assert cc.remotecall_fetch(noop, w, 1) == 1
    assert wraps.count == 1
    for i in range(20):
        assert cc.remotecall_fetch(noop, w, i) == i
        assert cc.remotecall(noop, w, i).fetch() == i
        assert cc.remotecall_wait(noop, w, i).fetch() == i
        cc.remote_do(noop, w, i)
        assert cc.spawnat(w, noop, i).fetch() == i
    assert wraps.count == 1
    assert cc.remotecall_fetch(held_here, w) >= 1


def test_lambdas_closures_and_main_classes_travel_once(w: int, wraps: Wraps) -> None:
    lam = lambda x: x + 1  # noqa: E731
    base = 10

    def closure(x: int) -> int:
        return x + base

    for i in range(5):
        assert cc.remotecall_fetch(lam, w, i) == i + 1
        assert cc.remotecall_fetch(closure, w, i) == i + 10
        assert cc.remotecall_fetch(total_of, w, Params(a=i)) == i + 2.0 + 5 * SCALE
    assert wraps.count == 3  # lam, closure, and total_of with Params in one frame


def test_a_redefined_function_reaches_the_worker_as_it_is_now(w: int) -> None:
    global redefined
    assert cc.remotecall_fetch(redefined, w) == "first"

    def redefined() -> str:
        return "second"

    assert cc.remotecall_fetch(redefined, w) == "second"
    redefined.__code__ = (lambda: "third").__code__
    assert cc.remotecall_fetch(redefined, w) == "third"


def test_closures_carry_their_values_of_now(w: int) -> None:
    def make(i: int) -> Any:
        return lambda: i

    assert [cc.remotecall_fetch(make(i), w) for i in range(5)] == list(range(5))

    count = 0

    def counter() -> int:
        return count

    for expected in range(3):
        count = expected
        assert cc.remotecall_fetch(counter, w) == expected
    items: list[int] = []

    def seen() -> list[int]:
        return items

    for i in range(3):
        items.append(i)  # changed in place: a full pickle would show it, and so do we
        assert cc.remotecall_fetch(seen, w) == list(range(i + 1))


def test_rebound_and_mutated_globals_are_read_as_they_are_now(w: int) -> None:
    global SCALE, NAMES
    try:
        assert cc.remotecall_fetch(scaled, w, 2) == 6
        SCALE = 5
        assert cc.remotecall_fetch(scaled, w, 2) == 10
        assert cc.remotecall_fetch(names_seen, w) == ["a"]
        NAMES.append("b")
        assert cc.remotecall_fetch(names_seen, w) == ["a", "b"]
        NAMES = ["z"]
        assert cc.remotecall_fetch(names_seen, w) == ["z"]
        assert cc.remotecall_fetch(total_of, w, Params()) == 1 + 2.0 + 5 * 5  # a method reads SCALE too
    finally:
        SCALE, NAMES = 3, ["a"]


def test_function_attributes_defaults_and_names_travel(w: int) -> None:
    def f(x: int, y: int = 1, *, z: int = 2) -> Any:
        return (x, y, z, getattr(f, "tag", None), f.__name__)

    assert cc.remotecall_fetch(f, w, 0) == (0, 1, 2, None, "f")
    f.tag = "t"  # type: ignore[attr-defined]
    f.__defaults__ = (7,)
    f.__kwdefaults__ = {"z": 8}
    assert cc.remotecall_fetch(f, w, 0) == (0, 7, 8, "t", "f")
    f.__name__ = "g"
    assert cc.remotecall_fetch(f, w, 0) == (0, 7, 8, "t", "g")


def test_a_main_class_changed_after_it_was_sent_is_sent_again(w: int, wraps: Wraps) -> None:
    p = Params()
    assert cc.remotecall_fetch(class_tag, w, p) is None
    assert cc.remotecall_fetch(class_tag, w, p) is None
    before = wraps.count
    Params.tag = "new"  # type: ignore[attr-defined]
    try:
        assert cc.remotecall_fetch(class_tag, w, p) == "new"
        assert wraps.count == before + 1
        Params.tag = "newer"  # type: ignore[attr-defined]
        assert cc.remotecall_fetch(class_tag, w, p) == "newer"
    finally:
        del Params.tag  # type: ignore[attr-defined]
    # (a full pickle sets the attributes a class has and deletes none: the worker's
    # class keeps "newer", with or without the cache)


def test_the_cache_is_bounded_and_evicted_code_is_sent_again(w: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serialize, "CODE_PER_LINK", 16)
    monkeypatch.setattr(serialize, "_FORGET_AT_ONCE", 4)
    functions = []
    for i in range(60):  # each its own code object
        namespace: dict[str, Any] = {"__name__": "scratch_for_test_code_once"}
        exec(f"def f(x):\n    return x * 1000 + {i}", namespace)
        functions.append(namespace["f"])
    for round_ in range(3):
        for i, f in enumerate(functions):
            assert cc.remotecall_fetch(f, w, round_) == round_ * 1000 + i
        assert len(_sent(w).entries) <= 16
        assert cc.remotecall_fetch(held_here, w) <= 16 + 1


def test_threads_sending_code_under_eviction_never_get_a_wrong_function(
    fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serialize, "CODE_PER_LINK", 8)
    monkeypatch.setattr(serialize, "_FORGET_AT_ONCE", 2)
    pids = cc.addprocs(2)
    functions = []
    for i in range(24):
        namespace: dict[str, Any] = {"__name__": "scratch_for_test_code_once"}
        exec(f"def f(x):\n    return (x, {i})", namespace)
        functions.append(namespace["f"])
    errors: list[BaseException] = []

    def hammer(seed: int) -> None:
        try:
            for k in range(150):
                i = (seed * 7 + k * 5) % len(functions)
                pid = pids[k % 2]
                if k % 3 == 0:
                    assert cc.remotecall(functions[i], pid, k).fetch() == (k, i)
                else:
                    assert cc.remotecall_fetch(functions[i], pid, k) == (k, i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_pools_pmap_and_everywhere_send_code_once(fresh: None, wraps: Wraps) -> None:
    pids = cc.addprocs(2)
    offset = 100

    def add(x: int) -> int:
        return x + offset

    assert cc.pmap(add, range(20)) == [x + 100 for x in range(20)]
    after_first = wraps.count
    assert after_first <= 2  # once per link
    assert cc.pmap(add, range(20)) == [x + 100 for x in range(20)]
    pool = cc.WorkerPool(pids)
    assert [cc.remotecall_fetch(add, pool, i) for i in range(6)] == [i + 100 for i in range(6)]
    assert wraps.count == after_first

    def hello() -> None:
        return None

    cc.everywhere(hello, procs=pids)
    cc.everywhere(hello, procs=pids)
    assert wraps.count == after_first + 2  # once per link


def test_what_a_link_held_goes_with_the_worker(fresh: None) -> None:
    pid = cc.addprocs(1)[0]
    assert cc.remotecall_fetch(lambda: 1, pid) == 1
    w_record = PGRP.workers[pid]
    conn = w_record.conn
    assert conn is not None and conn.code_tables is not None
    cc.rmprocs([pid])
    assert w_record.gone.wait(30)
    assert conn.code_tables is None


def test_code_frames_between_two_tables_in_process() -> None:
    """The wire format alone: definitions, references and forgotten ids, no cluster."""
    sender, receiver = serialize.CodeTables(), serialize.CodeTables()

    def send(obj: Any) -> Any:
        with sender.sent.lock:
            payload, buffers, delta = serialize.dumps_for_link(obj, sender.sent)
            if delta is not None:
                sender.sent.commit(delta)
        return serialize.loads(payload, buffers, receiver.held)

    def f(x: int) -> int:
        return x + SCALE

    assert send((f, 1))[0](1) == 4
    assert send((f, 2))[0](2) == 5
    assert len(receiver.held.defs) == 1
    with pytest.raises(Exception, match="not held"):
        serialize.loads(serialize.dumps_for_link(f, sender.sent)[0], [], serialize.CodeHeld())
    # a frame that was not sent gives back what it would have dropped
    with sender.sent.lock:
        _, _, delta = serialize.dumps_for_link(lambda: 0, sender.sent)
    assert delta is not None
    delta.forget.append(12345)
    sender.sent.abandon(delta)
    assert 12345 in sender.sent.forget


def _iter_defs(held: serialize.CodeHeld) -> Iterator[int]:
    yield from held.defs


def test_closures_over_arrays_and_modules_take_the_right_path(w: int) -> None:
    import numpy as np

    data = np.arange(200_000, dtype=np.float64)  # 1.6 MB: out of band, whichever path

    def total() -> float:
        return float(data.sum())

    def uses_module(x: float) -> float:
        return float(np.sqrt(x))

    for scale in (1.0, 2.0):
        data = data * scale if scale != 1.0 else data
        assert cc.remotecall_fetch(total, w) == float(data.sum())
    assert cc.remotecall_fetch(uses_module, w, 16.0) == 4.0


def test_results_carry_code_the_other_way(w: int) -> None:
    """A worker's reply that holds a function uses the worker's own record of the link."""

    def maker(k: int) -> Any:
        return lambda x: x + k

    for k in range(3):
        g = cc.remotecall_fetch(maker, w, k)
        assert g(10) == 10 + k
        assert cc.remotecall_fetch(g, w, 1) == 1 + k
    assert cc.remotecall(maker, w, 5).fetch()(1) == 6
