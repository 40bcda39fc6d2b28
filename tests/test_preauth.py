"""Before anyone is trusted: what a worker's listeners, the cookie and the address line accept."""

from __future__ import annotations

import io
import os

from clustercore_k8s.logstream import PodLog

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
