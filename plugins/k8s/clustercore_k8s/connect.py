"""Reaching a worker pod: at its pod IP (driver in the cluster) or through port-forward.

Port-forward goes through the API server and the kubelet
(``kubernetes.stream.portforward``), which dial ``localhost:PORT`` inside the
pod; that is why workers listen on ``0.0.0.0``. Either way the core gets a
:class:`PodSocket`: a plain socket (so the core's fast socket transport
applies) that, when the link drops, first lets the plugin learn from the
pod's status why, so the failed futures can say so.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from clustercore.plugin import WorkerConfig, connect_to_worker

from .tracker import PodState
from .workers import link_dropped

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)


class PodSocket(socket.socket):
    """A connected socket to one worker pod; ``on_drop()`` runs once, when the peer goes away."""

    on_drop: Callable[[], None] | None = None
    keep: Any = None  # what must live as long as the socket (the port-forward session)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        try:
            got = super().recv_into(buffer, nbytes, flags)
        except BlockingIOError:
            raise  # a read that asked not to wait (MSG_DONTWAIT) found nothing yet: not a drop
        except OSError:
            self._dropped()
            raise
        if got == 0 and (nbytes or len(buffer)):
            self._dropped()
        return got

    def _dropped(self) -> None:
        callback, self.on_drop = self.on_drop, None
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("handling a dropped worker link failed")


def connect(session: Session, pid: int, config: WorkerConfig) -> tuple[PodSocket, PodSocket]:
    """Open the driver's link to the worker in ``config``; set where other workers reach it."""
    state: PodState = config.userdata
    host, port = state.pod_ip, config.port
    if host is None or port is None:
        raise ConnectionError(f"worker {pid}: pod {state.name} has no pod IP or port")
    if session.direct:
        raw = connect_to_worker(host, port)  # with keepalive
        sock = PodSocket(fileno=raw.detach())
    else:
        forward = session.api.port_forward(state.name, port)
        sock = PodSocket(fileno=forward.socket(port).detach())
        sock.keep = forward
    sock.on_drop = lambda: link_dropped(session, state, pid)
    state.link = sock
    config.connect_at = (host, port)  # workers reach each other at their pod IPs
    return sock, sock
