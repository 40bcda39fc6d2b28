"""Before anyone is trusted: what a worker's listeners, the cookie and the address line accept."""

from __future__ import annotations

import io
import logging
import os

import pytest
from clustercore_k8s.logstream import PodLog

from clustercore.logs import LazyLogger, RateLimit
from clustercore.managers import forward_worker_output
from clustercore.testing import worker_output

# --- the address line: a whole line, never one that quotes it ---------------------------------

QUOTING = [
    b"echo clustercore_worker:6666#evil.example\n",
    b"clustercore_worker:6666#evil.example is what the worker would print\n",
    b"  clustercore_worker:6666#evil.example extra\n",
]


def test_the_output_forwarder_takes_only_a_whole_address_line() -> None:
    r, w = os.pipe()
    with worker_output() as out:
        forwarder = forward_worker_output(97, os.fdopen(r, "rb"))
        with os.fdopen(w, "wb") as writer:
            writer.write(b"".join(QUOTING) + b"clustercore_worker:4711#10.0.0.7\r\nafter\n")
        assert forwarder.wait_address(10) == ("10.0.0.7", 4711)
        assert out.wait_for("From worker 97:\tafter", timeout=10)
    forwarded = [line for line in out.lines if line.startswith("From worker 97:")]
    assert forwarded == [f"From worker 97:\t{q.decode().rstrip()}" for q in QUOTING] + ["From worker 97:\tafter"]


class _OneLog:
    """Just what PodLog uses of a KubeApi: one pod log stream."""

    def __init__(self, text: bytes) -> None:
        self.stream = io.BytesIO(text)

    def follow_log(self, name: str) -> io.BytesIO:
        return self.stream

    def forget_stream(self, resp: object) -> None:
        pass


def test_a_pod_log_yields_only_a_whole_address_line() -> None:
    log = PodLog(_OneLog(b"".join(QUOTING) + b"clustercore_worker:4711#10.0.0.7\n"), "pod")  # type: ignore[arg-type]
    assert log.read_address(10) == ("10.0.0.7", 4711)
    assert [log.readline() for _ in QUOTING] == QUOTING  # forwarded later as the worker's output
    assert PodLog(_OneLog(b"".join(QUOTING)), "pod").read_address(10) is None  # type: ignore[arg-type]


# --- rate-limited warnings ------------------------------------------------------------------------


def test_a_rate_limit_prints_one_line_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    limit = RateLimit(10.0, clock=lambda: now[0])
    assert limit.admit("a") == "a"
    assert [limit.admit(x) for x in "bcd"] == [None, None, None]
    assert limit.due() == 110.0 and limit.overdue() is None
    now[0] = 110.0
    assert limit.overdue() == "d (3 times in the last 10 s)"
    assert limit.overdue() is None and limit.due() is None
    now[0] = 115.0
    assert limit.admit("e") is None
    now[0] = 125.0
    assert limit.admit("f") == "f (2 times in the last 15 s)"  # e and f, since the line at 110
    now[0] = 200.0
    assert limit.admit("g") == "g"


def test_a_lazy_logger_holds_back_a_limited_warning_and_flushes_its_count(caplog: pytest.LogCaptureFixture) -> None:
    log = LazyLogger("clustercore.test_preauth")
    now = [100.0]
    log.limit("rejected %s")._clock = lambda: now[0]
    with caplog.at_level(logging.WARNING, logger="clustercore.test_preauth"):
        for i in range(5):
            log.warning("rejected %s", i)
        log.warning("other %s", 1)  # another template: not limited
        assert log.flush_limits() == 110.0
        now[0] = 111.0
        assert log.flush_limits() is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["rejected 0", "other 1", "rejected 4 (4 times in the last 11 s)"]
    assert caplog.records[0].pathname == __file__  # the caller's line, not the logger's
