"""``pods/portforward`` over WebSocket, protocol ``v4.channel.k8s.io`` (what kubelet speaks).

Each requested port ``i`` gets a data channel ``2*i`` and an error channel ``2*i+1``; every
binary message starts with its channel byte. The server first sends, on both channels of
each port, the port number as 2 little-endian bytes. Data from the client on channel ``2*i``
goes to the pod's port; what the pod sends comes back on ``2*i``. If the pod's port cannot be
reached, the reason is written on ``2*i+1``. The connection closes when every port's pod side
has closed (or the client goes away)::

    client                                   server (kubelet)
      | GET .../portforward?ports=P  Upgrade   |
      | <- 101, Sec-WebSocket-Protocol: v4...  |
      | <- [0, P lo, P hi]  [1, P lo, P hi]    |
      | [0, data...] ->      -> pod:P          |
      | <- [0, data...]      <- pod:P          |
      | <- close              (pod closed)     |

Like kubelet, the pod side is dialled at *localhost* inside the pod: a process listening
on 0.0.0.0 or 127.0.0.1 is reachable, one listening only on its pod IP is not. Here the
pods share the host's loopback, so the listener is looked up among the pod's own processes.
"""

from __future__ import annotations

import socket
import threading

import psutil
from k8s_websocket import OP_BINARY, OP_CLOSE, WebSocket

PROTOCOL = "v4.channel.k8s.io"
_LOCAL = {"0.0.0.0": "127.0.0.1", "127.0.0.1": "127.0.0.1", "::": "::1", "::1": "::1"}


def parse_ports(values: list[str]) -> list[int]:
    """``ports=8080&ports=9090`` or ``ports=8080,9090`` -> [8080, 9090]; ValueError if malformed."""
    ports = [int(p) for v in values for p in v.split(",") if p.strip()]
    if not ports or not all(0 < p < 65536 for p in ports):
        raise ValueError("invalid port")
    return ports


def connect_in_pod(uid: str, pids: list[int], port: int) -> socket.socket:
    """Dial ``localhost:port`` as seen from the pod: only if one of its processes listens there."""
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.laddr.ip in _LOCAL:
                return socket.create_connection((_LOCAL[conn.laddr.ip], port), timeout=5)
    raise ConnectionRefusedError(
        f"error forwarding port {port} to pod {uid}, uid : failed to connect to localhost:{port} inside namespace"
        f' "{uid}", IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused IPv6 dial tcp6 [::1]:{port}:'
        " connect: connection refused "
    )


def _pump(ws: WebSocket, channel: int, sock: socket.socket, done: threading.Event) -> None:
    try:
        while data := sock.recv(65536):
            ws.send(OP_BINARY, bytes([channel]) + data)
    except OSError:
        pass
    finally:
        done.set()


def serve(ws: WebSocket, uid: str, pids: list[int], ports: list[int]) -> None:
    """Run one port-forward session until the pod side or the client ends it."""
    socks: list[socket.socket | None] = []
    dones: list[threading.Event] = []
    for i, port in enumerate(ports):
        prefix = port.to_bytes(2, "little")
        ws.send(OP_BINARY, bytes([2 * i]) + prefix)
        ws.send(OP_BINARY, bytes([2 * i + 1]) + prefix)
    for i, port in enumerate(ports):
        done = threading.Event()
        try:
            sock: socket.socket | None = connect_in_pod(uid, pids, port)
            assert sock is not None
            sock.settimeout(None)
            threading.Thread(target=_pump, args=(ws, 2 * i, sock, done), daemon=True).start()
        except OSError as exc:
            ws.send(OP_BINARY, bytes([2 * i + 1]) + str(exc).encode())
            sock = None
            done.set()
        socks.append(sock)
        dones.append(done)

    def close_when_done() -> None:
        for done in dones:
            done.wait()
        ws.close()

    threading.Thread(target=close_when_done, daemon=True).start()
    try:
        while True:
            opcode, data = ws.recv()
            if opcode == OP_CLOSE:
                ws.close()
                return
            if data and data[0] % 2 == 0 and data[0] // 2 < len(socks):
                target = socks[data[0] // 2]
                if target is not None and len(data) > 1:
                    try:
                        target.sendall(data[1:])
                    except OSError:
                        pass
    except (EOFError, OSError):
        pass
    finally:
        for s in socks:
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv; close() alone would not
                except OSError:
                    pass
                s.close()
