"""Self-signed CA, server and client certificates for the TLS tests."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool, san: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def write_certs(directory: Path) -> dict[str, str]:
    """ca.pem, server.pem/.key (for 127.0.0.1), client.pem/.key; returns their paths."""
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca = _cert("isloader-test-ca", ca_key, "isloader-test-ca", ca_key, ca=True, san=False)
    server = _cert("localhost", server_key, "isloader-test-ca", ca_key, ca=False, san=True)
    client = _cert("trainer", client_key, "isloader-test-ca", ca_key, ca=False, san=False)
    paths = {}
    for name, obj in (("ca", ca), ("server", server), ("client", client)):
        path = directory / f"{name}.pem"
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        paths[name] = str(path)
    for name, key in (("server_key", server_key), ("client_key", client_key)):
        path = directory / f"{name}.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        paths[name] = str(path)
    return paths
