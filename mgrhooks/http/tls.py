"""The TLS certificate and key of ``mgrhooks serve``. I/O.

Those named in ``etc/mgrhooks.conf`` (``[serve] cert``, ``key``), else a self-signed pair
made on first start as ``etc/mgrhooks.crt`` and ``etc/mgrhooks.key`` (mode 600), as the
panel's own web server makes one (/work/shared/HTTP-API.md, *Transport*): an ECDSA P-256
key, the certificate valid ten years for ``localhost``, this host's name, 127.0.0.1 and ::1,
and a CA of its own (a client verifies the server by giving it as the CA file, e.g.
``curl --cacert etc/mgrhooks.crt``). Made with ``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from pathlib import Path

from ..errors import RootError
from ..root import Root
from ..settings import Serve

CERT = "etc/mgrhooks.crt"
KEY = "etc/mgrhooks.key"
#: days the self-signed certificate is valid (our choice)
DAYS = 3650


def pair(root: Root, serve: Serve) -> tuple[Path, Path]:
    """The certificate and key files to serve with: ``serve.cert`` and ``serve.key``
    (relative to the root), else the self-signed pair, made if either file is missing.

    :raises RootError: a named file is missing, or the pair cannot be written
    """
    if serve.cert:
        named = root.path / serve.cert, root.path / serve.key
        for path in named:
            if not path.is_file():
                raise RootError(f"{root.path / 'etc/mgrhooks.conf'}: [serve] names {path}, which is not a file")
        return named
    cert, key = root.path / CERT, root.path / KEY
    if not (cert.is_file() and key.is_file()):
        try:
            make_pair(cert, key, socket.getfqdn())
        except OSError as exc:
            raise RootError(f"cannot write the TLS certificate {cert}: {exc.strerror}") from None
    return cert, key


def make_pair(cert: Path, key: Path, hostname: str) -> None:
    """Write a new self-signed certificate for ``hostname`` (and the loopback names) and
    its key, both mode 600, replacing what was there. :raises OSError: they cannot be written"""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname or "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    dns = sorted({"localhost", hostname} - {""})
    addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    alternative = [*map(x509.DNSName, dns), *map(x509.IPAddress, addresses)]
    usage = x509.KeyUsage(True, False, False, False, False, True, False, False, False)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(private, hashes.SHA256())
    )
    key_bytes = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(key, key_bytes)
    _write(cert, certificate.public_bytes(serialization.Encoding.PEM))


def _write(path: Path, data: bytes) -> None:
    """``data`` into a new file ``path`` of mode 600 (replacing one there)."""
    from .. import files

    path.parent.mkdir(parents=True, exist_ok=True)
    files.replace(path, data, 0o600)
