"""Between hosts (issue 15 §3): 100 MiB between network-namespace hosts, against a raw stream.

The hosts are the network namespaces ``ccnode1..3`` of ``tests/services/hosts``
(10.200.0.11.., sshd on port 22 in each; the root namespace is 10.200.0.1 to
them). clustercore's bytes flow where its processes are: the driver here, in
the root namespace, and two workers launched over SSH, on ccnode1 and
ccnode2, which the driver dials over TCP and which dial each other. Three
paths, one direction each:

* **driver → worker**: ``remotecall_fetch(nbytes, w1, a)`` (the array there,
  its size back), against a raw stream from the root namespace to ccnode1;
* **worker → driver**: ``fetch`` of a result ``w1`` has ready, against a raw
  stream from ccnode1 to the root namespace;
* **worker → worker**: on ``w2``, ``fetch`` of a result ``w1`` has ready
  (timed there), against a raw stream from ccnode1 to ccnode2.

The floor of each path is one Python process sending the same number of bytes
(``sendall``) to one in the other namespace (``ip netns exec``), which reads
them with ``recv_into`` into one reused buffer and answers one byte; timed
from the first byte sent to that answer, as clustercore's calls are timed
from the call to its small reply. The TLS floor is the same stream through
Python's ``ssl`` with the contexts clustercore makes (``TLSCredentials``, so
TLS 1.3, mutual certificates and the same cipher, which the table names).
Plain and TLS alternate in turns (a cluster is all TLS or all plain), each
turn measuring the floor and clustercore back to back, so noise falls on both;
ratios are clustercore's GB/s over the floor's, of the medians of all turns.

It needs root (``ip netns exec``) and the namespace hosts. Run as root while
they are down, it starts them (``tests/services/hosts up``, a few seconds) and
stops them again at the end; without root or the SSH plugin it is skipped
with a one-line reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import MIB, Sizes

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = REPO_ROOT / "tests" / "services"
KINDS = ("plain", "TLS")
PATHS = ("driver → worker", "worker → driver", "worker → worker")
CHILD_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Hosts:
    """What the namespace hosts give this section: two of them, and how to reach them."""

    one: str  # the first host: its namespace, hostname and ssh alias
    two: str
    addresses: list[str]  # of one and two, first
    controller: str  # the root namespace, as the hosts see it
    ssh_config: str
    started_here: bool  # this run brought them up, and takes them down

    def endpoints(self, path: str) -> tuple[str | None, str | None, str]:
        """Where the floor's sender and receiver run (a namespace, None: the root one) and
        the address the receiver listens on, for ``path``."""
        if path == PATHS[0]:
            return None, self.one, self.addresses[0]
        if path == PATHS[1]:
            return self.one, None, self.controller
        return self.one, self.two, self.addresses[1]


# --- the hosts -------------------------------------------------------------------------------


def _services_env(state: Path) -> dict[str, str]:
    """The test services' variables (``$STATE/env``); those already in the environment win."""
    sys.path.insert(0, str(SERVICES))
    try:
        import ccservices
    finally:
        sys.path.remove(str(SERVICES))
    try:
        found = ccservices.parse_exports((state / "env").read_text())
    except FileNotFoundError:
        found = {}
    return {**found, **{k: v for k, v in os.environ.items() if k.startswith("CLUSTERCORE_")}}


def prepare() -> Hosts | str:
    """The hosts, started if this process may and they are down; else why this section skips."""
    if not sys.platform.startswith("linux"):
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (ip netns exec into the namespace hosts); run it as root"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    try:
        import clustercore_ssh  # noqa: F401 - the SSH plugin launches the workers
    except ImportError:
        return "needs the SSH plugin (pip install ./plugins/ssh)"
    state = Path(os.environ.get("CLUSTERCORE_SERVICES_DIR", "/tmp/clustercore-services"))
    started = False
    namespaces = [Path("/run/netns", f"ccnode{i}") for i in (1, 2)]  # tests/services/hosts' names
    if not ((state / "hosts" / "env").is_file() and all(ns.exists() for ns in namespaces)):
        proc = subprocess.run(
            ["bash", str(SERVICES / "hosts"), "up"], capture_output=True, text=True, timeout=300, check=False
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return f"the namespace hosts are down and `tests/services/hosts up` failed: {last}"
        started = True
    env = _services_env(state)
    names = env.get("CLUSTERCORE_TEST_HOSTNAMES", "").split()
    addresses = env.get("CLUSTERCORE_TEST_HOSTS", "").split()
    controller = env.get("CLUSTERCORE_TEST_CONTROLLER_ADDR", "")
    config = env.get("CLUSTERCORE_SSH_CONFIG") or str(state / "ssh" / "ssh_config")
    one, two = [*names, "", ""][:2]
    hosts = Hosts(one, two, addresses, controller, config, started)
    if len(names) < 2 or len(addresses) < 2 or not controller or not os.path.isfile(config):
        stop(hosts)
        return "the namespace hosts' variables are incomplete (tests/services/hosts up writes them)"
    return hosts


def stop(hosts: Hosts) -> None:
    """Take the hosts down if this run brought them up."""
    if hosts.started_here:
        subprocess.run(["bash", str(SERVICES / "hosts"), "down"], capture_output=True, timeout=120, check=False)


# --- the floor: one process sends, one in the other namespace receives -------------------------


def _in_namespace(ns: str | None, argv: list[str]) -> list[str]:
    return argv if ns is None else ["ip", "netns", "exec", ns, *argv]


def _child(role: str, *args: Any) -> list[str]:
    return [sys.executable, "-m", "bench.hosts", role, *map(str, args)]


class Floor:
    """A raw stream along one path: a receiver in one namespace, a sender in the other,
    kept for many transfers, each one started by :meth:`transfer` (TLS when ``tls_word``
    holds encoded credentials)."""

    def __init__(self, hosts: Hosts, path: str, tls_word: str, nbytes: int) -> None:
        src, dst, address = hosts.endpoints(path)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        secret = (tls_word + "\n").encode()
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            receiver = self._start(dst, _child("recv", address, nbytes), env)
            assert receiver.stdin is not None and receiver.stdout is not None
            receiver.stdin.write(secret)
            receiver.stdin.close()
            port = receiver.stdout.readline().strip()
            if not port.isdigit():
                raise RuntimeError(f"floor receiver in {dst or 'the root namespace'}: {self._errors()}")
            self.sender = self._start(src, _child("send", address, int(port), nbytes), env)
            self.cipher = self._ask(secret)
        except BaseException:
            self.close()
            raise

    def _start(self, ns: str | None, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            _in_namespace(ns, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
            env=env,
        )
        self.procs.append(proc)
        return proc

    def _ask(self, line: bytes) -> str:
        assert self.sender.stdin is not None and self.sender.stdout is not None
        self.sender.stdin.write(line)
        self.sender.stdin.flush()
        answer = self.sender.stdout.readline().decode().strip()
        if not answer.startswith("ok"):
            raise RuntimeError(f"floor sender: {answer or self._errors()}")
        return answer[3:]

    def transfer(self) -> float:
        """Seconds for one stream of ``nbytes``, until the receiver's one-byte answer."""
        return float(self._ask(b"go\n"))

    def _errors(self) -> str:
        self.close()
        return " | ".join(p.stderr.read().decode(errors="replace")[-1000:] for p in self.procs if p.stderr)

    def close(self) -> None:
        for proc in self.procs:  # ours, by pid
            if proc.stdin is not None and not proc.stdin.closed:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _context(tls_word: str, server_side: bool) -> Any:
    from clustercore.links.credentials import TLSCredentials

    return TLSCredentials.decode(tls_word).context(server_side=server_side)


def _recv_main(address: str, nbytes: int) -> None:
    """A floor's receiver: print the port, take one connection, read streams of ``nbytes``
    into one buffer, answering one byte after each, until the sender closes."""
    tls_word = sys.stdin.readline().strip()
    with socket.create_server((address, 0)) as server:
        server.settimeout(CHILD_TIMEOUT_S)
        print(server.getsockname()[1], flush=True)
        conn, _ = server.accept()
    conn.settimeout(None)
    if tls_word:
        conn = _context(tls_word, server_side=True).wrap_socket(conn, server_side=True)
    view = memoryview(bytearray(nbytes))
    while True:
        got = 0
        while got < nbytes:
            n = conn.recv_into(view[got:])
            if not n:
                if got:
                    raise EOFError("the sender went away in the middle of a stream")
                return
            got += n
        conn.sendall(b"k")


def _send_main(address: str, port: int, nbytes: int) -> None:
    """A floor's sender: connect (TLS if credentials come first on stdin), answer ``ok
    CIPHER``, then one stream of ``nbytes`` per ``go`` line, answering ``ok SECONDS``."""
    tls_word = sys.stdin.readline().strip()
    conn = socket.create_connection((address, port), timeout=CHILD_TIMEOUT_S)
    conn.settimeout(None)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cipher = ""
    if tls_word:
        conn = _context(tls_word, server_side=False).wrap_socket(conn)
        cipher = f"{conn.version()} {conn.cipher()[0]}"  # type: ignore[attr-defined,index]
    print("ok", cipher, flush=True)
    data = memoryview(os.urandom(nbytes))
    for line in sys.stdin:
        if line.strip() != "go":
            break
        start = time.perf_counter()
        conn.sendall(data)
        if conn.recv(1) != b"k":
            raise EOFError("the receiver went away")
        print("ok", time.perf_counter() - start, flush=True)
    conn.close()


# --- clustercore: two SSH-launched workers ----------------------------------------------------


def _make(nbytes: int) -> Any:
    """On a worker: a fresh array of ``nbytes``, every page written."""
    import numpy as np

    return np.ones(nbytes // 8)


def _nbytes(x: Any) -> int:
    return int(x.nbytes)


def _pull(source: int, nbytes: int) -> float:
    """On a worker: seconds to fetch a result of ``nbytes`` that worker ``source`` has ready."""
    import clustercore as cc

    ref = cc.remotecall(_make, source, nbytes)
    cc.wait(ref)
    start = time.perf_counter()
    cc.fetch(ref)
    return time.perf_counter() - start


class Cluster:
    """Two workers launched over SSH, on the first and the second host, plain or TLS."""

    def __init__(self, cc: Any, hosts: Hosts, tls: bool, nbytes: int) -> None:
        import numpy as np

        self.cc, self.nbytes = cc, nbytes
        self.pids = cc.addprocs(
            [hosts.one, hosts.two], sshflags=("-F", hosts.ssh_config), tls=tls, env={"PYTHONPATH": str(REPO_ROOT)}
        )
        self.payload = np.random.default_rng(0).random(nbytes // 8)

    def transfer(self, path: str) -> float:
        """Seconds for one array of ``nbytes`` along ``path``."""
        cc, (one, two) = self.cc, self.pids  # in the order of the machines
        if path == PATHS[0]:
            start = time.perf_counter()
            if cc.remotecall_fetch(_nbytes, one, self.payload) != self.nbytes:
                raise AssertionError("the worker got another size")
            return time.perf_counter() - start
        if path == PATHS[1]:
            ref = cc.remotecall(_make, one, self.nbytes)
            cc.wait(ref)
            start = time.perf_counter()
            cc.fetch(ref)
            return time.perf_counter() - start
        return float(cc.remotecall_fetch(_pull, two, one, self.nbytes))

    def close(self) -> None:
        self.cc.rmprocs(self.pids)


# --- the section ----------------------------------------------------------------------------


def run(sizes: Sizes, quick: bool) -> dict[str, Any]:
    """Floor and clustercore, plain and TLS, every path, in alternating turns; or why not."""
    hosts = prepare()
    if isinstance(hosts, str):
        return {"skipped": hosts}
    try:
        return _measure(hosts, sizes, quick)
    finally:
        stop(hosts)


def _measure(hosts: Hosts, sizes: Sizes, quick: bool) -> dict[str, Any]:
    import clustercore as cc
    from clustercore.links.certificates import make_cluster_credentials

    nbytes = sizes.bandwidth_bytes
    turns = 1 if quick else 2
    transfers = 1 if quick else 4  # per turn and path, after a warm-up of each
    tls_word = make_cluster_credentials("bench-floor").encode()
    samples = {k: {p: {"floor": [], "clustercore": []} for p in PATHS} for k in KINDS}
    ciphers: set[str] = set()
    for turn in range(turns):
        for kind in KINDS if turn % 2 == 0 else KINDS[::-1]:
            cluster = Cluster(cc, hosts, kind == "TLS", nbytes)
            try:
                for path in PATHS:
                    floor = Floor(hosts, path, tls_word if kind == "TLS" else "", nbytes)
                    try:
                        if floor.cipher:
                            ciphers.add(floor.cipher)
                        floor.transfer()  # warm-ups: connections, first pages, TCP windows
                        cluster.transfer(path)
                        cell = samples[kind][path]
                        for i in range(transfers):  # one of each, in turn, so noise falls on both
                            for who in ("floor", "clustercore")[:: 1 if i % 2 == 0 else -1]:
                                one = floor.transfer() if who == "floor" else cluster.transfer(path)
                                cell[who].append(one)
                    finally:
                        floor.close()
            finally:
                cluster.close()
    result: dict[str, Any] = {
        "mib": nbytes / MIB,
        "turns": turns,
        "samples_per_cell": turns * transfers,
        "hosts": [hosts.one, hosts.two],
        "tls_cipher": ", ".join(sorted(ciphers)),
        "started_hosts": hosts.started_here,
    }
    for kind in KINDS:
        result[kind] = {}
        for path in PATHS:
            cell = samples[kind][path]
            gbps = {who: nbytes / statistics.median(s) / 1e9 for who, s in cell.items()}
            pairs = [f / c for f, c in zip(cell["floor"], cell["clustercore"], strict=True)]
            result[kind][path] = {
                "floor_gbps": gbps["floor"],
                "clustercore_gbps": gbps["clustercore"],
                "ratio": gbps["clustercore"] / gbps["floor"],
                "pair_ratio_range": [min(pairs), max(pairs)],
                "floor_seconds": cell["floor"],
                "clustercore_seconds": cell["clustercore"],
            }
    return result


def render(result: dict[str, Any]) -> str:
    title = "## Between hosts (issue 15 §3): one array over SSH-launched workers against a raw stream"
    if "skipped" in result:
        return f"{title}\n\nskipped: {result['skipped']}"
    one, two = result["hosts"]
    lines = [
        title,
        "",
        f"{result['mib']:.0f} MiB; driver in the root namespace, workers on {one} and {two}; "
        f"medians of {result['samples_per_cell']} transfers each, {result['turns']} turns of plain and TLS, "
        "floor and clustercore transfers alternating",
        "",
        "| path | link | floor GB/s | clustercore GB/s | x floor | x floor, transfer by transfer |",
        "|---|---|---|---|---|---|",
    ]
    for path in PATHS:
        for kind in KINDS:
            c = result[kind][path]
            low, high = c["pair_ratio_range"]
            lines.append(
                f"| {path} | {kind} | {c['floor_gbps']:.2f} | {c['clustercore_gbps']:.2f} | {c['ratio']:.2f}x "
                f"| {low:.2f}..{high:.2f}x |"
            )
    lines += ["", f"TLS floor and clustercore: {result['tls_cipher'] or '-'} (the same contexts)"]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """The floor's two child roles: ``recv ADDRESS NBYTES`` and ``send ADDRESS PORT NBYTES``
    (TLS credentials, or an empty line, first on stdin)."""
    role, *args = argv
    if role == "recv":
        _recv_main(args[0], int(args[1]))
    elif role == "send":
        _send_main(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main(sys.argv[1:])
