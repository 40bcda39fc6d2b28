"""The joining worker: ``clustercore worker --join HOST:PORT`` (also ``clustercore join HOST:PORT``).

Julia's ``elastic_worker``: dial the driver's listener, prove the cookie
(:mod:`.admission`), then become an ordinary worker that serves the dialed
connection as if it had accepted it (``clustercore.start_worker`` with
``driver_link``): the driver runs clustercore's handshake on it as the
connector, and pid 1's ``JoinPGRP`` makes this process a worker. It also
listens, as every worker does, for the other workers (``--bind-to``), and exits
when the driver's link closes.

The cookie comes from the first line of stdin, or from ``--cookie-file F``, a
file only its owner may read (as ssh insists for a private key).
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import sys
from typing import NoReturn

import clustercore

from . import admission
from .manager import parse_address

PROG = "clustercore worker --join"


class JoinError(Exception):
    """The driver could not be reached, or refused this worker."""


def read_cookie_file(path: str) -> str:
    """The first line of ``path``; ``PermissionError`` unless only its owner (you) may read it."""
    with open(path, "rb") as f:  # fstat what was opened, not a name that may change meanwhile
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PermissionError(f"{path} is not a regular file")
        if info.st_uid != os.geteuid():
            raise PermissionError(f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})")
        if info.st_mode & 0o077:
            raise PermissionError(
                f"{path} may be read by others than its owner (mode {stat.S_IMODE(info.st_mode):04o}): "
                f"the cookie lets whoever reads it run code as you; chmod 600 {path}"
            )
        return f.readline().decode().strip()


def dial(address: str | tuple[str, int], cookie: str, timeout: float = 20.0) -> socket.socket:
    """Connect to the listener at ``address`` and prove the cookie; the admitted connection."""
    host, port = parse_address(address)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise JoinError(f"cannot connect to the driver at {where}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        try:
            message = _read_exact(sock, admission.CHALLENGE_LEN)
            answer = admission.prove(cookie, message)
        except (ValueError, EOFError) as exc:
            raise JoinError(f"{where} is not a clustercore elastic listener ({exc})") from exc
        sock.sendall(answer)
        try:
            verdict = _read_exact(sock, admission.VERDICT_LEN)
        except EOFError as exc:
            raise JoinError(f"the driver at {where} closed the connection before answering") from exc
        status, theirs = verdict[0], verdict[1:]
        if status == admission.WRONG_COOKIE:
            raise JoinError(f"the driver at {where} refused the cookie: it is not this cluster's")
        if status == admission.WRONG_VERSION:
            raise JoinError(
                f"the driver at {where} runs {admission.describe_versions(theirs)}, this worker "
                f"{admission.describe_versions(admission.local_versions())}: they must match"
            )
        if status != admission.ADMITTED:
            raise JoinError(f"the driver at {where} answered {status}, which this worker does not know")
    except (JoinError, OSError) as exc:
        sock.close()
        if isinstance(exc, JoinError):
            raise
        raise JoinError(f"joining the driver at {where} failed: {exc}") from exc
    sock.settimeout(None)
    return sock


def join(address: str | tuple[str, int], cookie: str, *, bind_to: str | None = None) -> NoReturn:
    """Join the cluster whose driver listens at ``address`` and serve it; returns only by exiting."""
    clustercore.cluster_cookie(cookie)  # a too-short cookie is refused before any dial
    sock = dial(address, cookie)
    out = sock.makefile("w", encoding="ascii", newline="\n")  # the address line goes to the driver
    clustercore.start_worker(out, cookie, close_stdin=True, stderr_to_stdout=False, bind_to=bind_to, driver_link=sock)
    raise SystemExit(0)  # start_worker exits the process itself


def main(argv: list[str]) -> int:
    """``clustercore worker --join HOST:PORT [--cookie-file F] [--bind-to ADDR[:PORT]]``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Join a running cluster whose driver listens with clustercore-elastic's ElasticManager. "
        "The cookie is read from the first line of stdin unless --cookie-file is given.",
    )
    parser.add_argument("address", nargs="?", metavar="HOST:PORT", help="the driver's elastic listener")
    parser.add_argument("--join", metavar="HOST:PORT", dest="join", help="the same, as `clustercore worker` spells it")
    parser.add_argument("--cookie-file", metavar="FILE", help="read the cookie from FILE (mode 0600, yours)")
    parser.add_argument("--bind-to", metavar="ADDR[:PORT]", help="where to listen for the other workers")
    args = parser.parse_args(argv)
    if (args.address is None) == (args.join is None):
        parser.error("give the driver's address once: --join HOST:PORT")
    address = args.join or args.address
    try:
        parse_address(address)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if args.cookie_file is not None:
        try:
            cookie = read_cookie_file(args.cookie_file)
        except OSError as exc:
            return _fail(f"refusing --cookie-file: {exc}", 2)
        if not cookie:
            return _fail(f"--cookie-file {args.cookie_file} is empty", 2)
    else:
        cookie = sys.stdin.readline().strip()
        if not cookie:
            return _fail("no cluster cookie on the first line of stdin (or give --cookie-file)", 2)
    try:
        join(address, cookie, bind_to=args.bind_to)
    except ValueError as exc:  # the cookie's length
        return _fail(str(exc), 2)
    except JoinError as exc:
        return _fail(str(exc), 1)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return code


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"the connection closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)
