"""The admission step: what a joining worker proves before the driver spends anything on it.

A worker dials the driver's elastic listener; the driver is the one that then
runs clustercore's handshake as the *connector* (pid 1 dialing pid 0, as for
any new worker), and the worker serves the link as its *acceptor*, so the core's
mutual cookie proof authenticates both ends and nothing is unpickled before it.

But the listener takes connections from anyone, and the core's handshake runs
inside ``addprocs``, which is serialized: a peer that stalled or failed there
would hold up, or fail, the joins around it. So before a connection is handed
to ``addprocs`` the worker proves that it holds the cookie, in a few fixed-size
reads that the listener's single thread does without blocking::

    driver (listener)                                   joining worker
      "CCJOIN01" | nonce (32)                       ->
                                                    <-  mac (32) | version block (4)
        mac = HMAC-SHA256(cookie, "clustercore-elastic join\\0" nonce versions)
      status (1) | version block (4)                ->
        0: admitted; 1: wrong cookie (zeros follow); 2: version mismatch (the driver's)
                                                    <-  "clustercore_worker:PORT#HOST\\n" (at most 256 bytes)
      ... then clustercore's own handshake, the driver connecting, and JoinPGRP.

The MAC's prefix is not one the core's handshake uses ("acceptor", "connector"),
so neither exchange's proofs can stand in for the other's. The version block is
the core's ``<HBB`` (protocol, Python major, minor): a worker that cannot join
learns why from the status, and only after it proved the cookie does it learn
the driver's versions. The address line is where the worker listens for the
other workers (the ``all_to_all`` topology); the driver has no other way to
learn it, as the worker may sit behind a firewall that lets only its own dial out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct

from clustercore.plugin import versions

MAGIC = b"CCJOIN01"
NONCE_LEN = 32
MAC_LEN = 32
VERSIONS = struct.Struct("<HBB")
CHALLENGE_LEN = len(MAGIC) + NONCE_LEN
PROOF_LEN = MAC_LEN + VERSIONS.size
VERDICT_LEN = 1 + VERSIONS.size
ADDRESS_LINE_MAX = 256

ADMITTED, WRONG_COOKIE, WRONG_VERSION = 0, 1, 2

_DOMAIN = b"clustercore-elastic join\0"


def challenge() -> tuple[bytes, bytes]:
    """``(message, nonce)``: what the listener sends a new connection first."""
    nonce = secrets.token_bytes(NONCE_LEN)
    return MAGIC + nonce, nonce


def prove(cookie: str, message: bytes) -> bytes:
    """The worker's answer to the listener's ``message``; ``ValueError`` if it is not a challenge."""
    if len(message) != CHALLENGE_LEN or not message.startswith(MAGIC):
        raise ValueError("the peer is not a clustercore elastic listener")
    block = local_versions()
    return _mac(cookie, message[len(MAGIC) :], block) + block


def check(cookie: str, nonce: bytes, proof: bytes) -> tuple[int, bytes]:
    """The listener's verdict on ``proof``: ``(status, the verdict message to send)``."""
    mac, block = proof[:MAC_LEN], proof[MAC_LEN:]
    if not hmac.compare_digest(mac, _mac(cookie, nonce, block)):
        return WRONG_COOKIE, bytes([WRONG_COOKIE]) + bytes(VERSIONS.size)
    ours = local_versions()
    status = ADMITTED if block == ours else WRONG_VERSION
    return status, bytes([status]) + ours


def local_versions() -> bytes:
    return VERSIONS.pack(*versions())


def describe_versions(block: bytes) -> str:
    protocol, major, minor = VERSIONS.unpack(block)
    return f"protocol {protocol}, Python {major}.{minor}"


def _mac(cookie: str, nonce: bytes, block: bytes) -> bytes:
    return hmac.new(cookie.encode(), _DOMAIN + nonce + block, hashlib.sha256).digest()
