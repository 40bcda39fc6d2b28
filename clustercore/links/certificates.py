"""A cluster's own CA and the one certificate its processes present, made with ``cryptography``.

The driver makes them when a cluster turns TLS on and hands them to each
worker the way the cookie travels (a worker's stdin, a Kubernetes Secret).
Every process of the cluster presents the same certificate: all of them hold
the cookie, which is the whole of the cluster's authority, so a key per worker
would guard nothing more, and this way the CA's key is needed only here, once,
and is never kept or sent. The certificates are valid for a year: a cluster
that runs longer can make no new links once they expire.
"""

from __future__ import annotations

import datetime

from .credentials import TLSCredentials

VALID_FOR = datetime.timedelta(days=365)
_CLOCK_SKEW = datetime.timedelta(minutes=5)  # hosts whose clocks run a little behind accept it too


def make_cluster_credentials(cluster_id: str) -> TLSCredentials:
    """A fresh CA and a certificate signed by it for ``cluster_id``, ECDSA P-256."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"clustercore CA {cluster_id}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    member = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"clustercore member {cluster_id}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(member)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return TLSCredentials(
        ca=ca.public_bytes(pem),
        cert=cert.public_bytes(pem),
        key=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
