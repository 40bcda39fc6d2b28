"""A cluster's TLS material and the ``ssl`` contexts made from it.

Kept apart from :mod:`.tls` so that holding credentials (every worker of a
cluster that uses TLS) does not import :mod:`ssl` until a link needs it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl


@dataclasses.dataclass(frozen=True)
class TLSCredentials:
    """A cluster's TLS material, as PEM: the CA every end checks the other against,
    and the certificate and key this process presents."""

    ca: bytes
    cert: bytes
    key: bytes

    def __repr__(self) -> str:  # the key is never in an error message or a log
        return f"TLSCredentials(ca=<{len(self.ca)} bytes>, cert=<{len(self.cert)} bytes>, key=<hidden>)"

    def encode(self) -> str:
        """One whitespace-free word, for the line that hands a worker its secrets."""
        fields = {name: getattr(self, name).decode("ascii") for name in ("ca", "cert", "key")}
        return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode("ascii")

    @classmethod
    def decode(cls, word: str) -> TLSCredentials:
        """The inverse of :meth:`encode`; ``ValueError`` for anything else."""
        try:
            fields = json.loads(base64.urlsafe_b64decode(word.encode("ascii")))
            return cls(*(fields[name].encode("ascii") for name in ("ca", "cert", "key")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed TLS credentials: {exc}") from None

    @classmethod
    def from_files(
        cls, ca: str | os.PathLike[str], cert: str | os.PathLike[str], key: str | os.PathLike[str]
    ) -> TLSCredentials:
        """Your own CA, certificate and (unencrypted) key, as PEM files; checked at once."""
        creds = cls(*(_read(path) for path in (ca, cert, key)))
        creds.check()
        return creds

    def check(self) -> None:
        """``ValueError`` unless both sides' contexts can be made from these credentials."""
        self.context(server_side=True)
        self.context(server_side=False)

    def context(self, *, server_side: bool) -> ssl.SSLContext:
        """An ``SSLContext`` for one side of a link; made once per side."""
        cache = _CONTEXTS.setdefault(self, {})
        if server_side not in cache:
            cache[server_side] = _make_context(self, server_side)
        return cache[server_side]


_CONTEXTS: dict[TLSCredentials, dict[bool, ssl.SSLContext]] = {}


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"cannot read TLS file {os.fspath(path)!r}: {exc.strerror}") from None


def _make_context(creds: TLSCredentials, server_side: bool) -> ssl.SSLContext:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # the cookie handshake inside names the processes
    ctx.verify_mode = ssl.CERT_REQUIRED
    if server_side:
        ctx.num_tickets = 0  # no session tickets: nothing for the client to read after the handshake
    try:
        ctx.load_verify_locations(cadata=creds.ca.decode("ascii"))
        _load_chain(ctx, creds.cert + b"\n" + creds.key)
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"unusable TLS credentials: {exc}") from None
    return ctx


def _load_chain(ctx: ssl.SSLContext, pem: bytes) -> None:
    """``load_cert_chain`` reads only files: hand it an anonymous memory file where the
    platform has one (nothing touches a disk), else a private temporary file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("clustercore-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile() as f:  # mode 0600
        f.write(pem)
        f.flush()
        ctx.load_cert_chain(f.name)
