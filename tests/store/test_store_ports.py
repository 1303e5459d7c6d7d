"""Every port of the embedded store but S3 refuses a local process that holds none of the data dir's secrets.

One real ``weed server`` for the module. Each attack is what worked before issue 11 (plain HTTP to the master,
volume and filer ports listed, read, wrote and deleted objects; plain gRPC on port+10000 was served), tried
without a certificate, with a certificate of another CA, and, for the data paths, with weed's certificate but
without its JWT. Positive controls show that the same ports do answer the holder of the secrets, so a refusal
is the authentication at work, not a dead port.
"""

from __future__ import annotations

import datetime
import http.client
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kai_flows.store import EmbeddedSeaweedFS
from kai_flows.store.s3 import ArtifactStore

GRPC_OFFSET = 10000
SECRET_KEY = "secret/obj"
SECRET = b"top secret"
# HTTP/2 client preface and an empty SETTINGS frame: what a gRPC client sends first
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
HTTP_ROLES = ("master", "volume", "filer")
GRPC_ROLES = ("master", "volume", "filer", "s3")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSeaweedFS]:
    with EmbeddedSeaweedFS(tmp_path_factory.mktemp("ports") / "store") as sw:
        sw.store().put_bytes(SECRET_KEY, SECRET)
        yield sw


@pytest.fixture(scope="module")
def foreign_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed client certificate: valid TLS, but not from the store's CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kai-flows-weed")])  # even the right name
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("foreign")
    (folder / "c.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "c.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(folder / "c.crt"), str(folder / "c.key")


# ------------------------------------------------------------------------------------------------ helpers
def attacks(server: EmbeddedSeaweedFS, role: str) -> list[tuple[str, str, bytes | None]]:
    """(method, path, body) that list, read, write or delete on ``role``'s HTTP port, as they did before."""
    bucket = f"/buckets/{server.bucket}"
    fid = "1,01637037d6"  # any file id: the request never gets as far as the volume lookup
    return {
        "master": [
            ("GET", "/dir/status", None),  # topology: volume ids, servers
            ("POST", "/dir/assign", None),  # a write ticket for the volume server
            ("GET", "/vol/grow?count=1", None),
            ("GET", f"/col/delete?collection={server.bucket}", None),  # drops every object of the bucket
            ("GET", "/cluster/status", None),
        ],
        "volume": [
            ("GET", "/status", None),
            ("GET", f"/{fid}", None),
            ("POST", f"/{fid}", b"x"),
            ("DELETE", f"/{fid}", None),
        ],
        "filer": [
            ("GET", f"{bucket}/secret/", None),
            ("GET", f"{bucket}/{SECRET_KEY}", None),
            ("PUT", f"{bucket}/secret/planted", b"x"),
            ("DELETE", f"{bucket}/{SECRET_KEY}", None),
        ],
    }[role]


def outcome(pool: urllib3.PoolManager, method: str, url: str, body: bytes | None) -> str:
    """``refused: ...`` when the server would not talk, else ``answered <status>: <body>``."""
    try:
        response = pool.request(method, url, body=body)
    except (urllib3.exceptions.SSLError, urllib3.exceptions.ProtocolError) as err:
        return f"refused: {err}"
    text = response.data[:200].decode(errors="replace")
    if response.status == 400 and "HTTP request to an HTTPS server" in text:  # Go's answer to plain HTTP on TLS
        return f"refused: {text.strip()}"
    return f"answered {response.status}: {text}"


def client(**tls: str) -> urllib3.PoolManager:
    return urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=5), **tls)  # type: ignore[arg-type]


def h2_reply(sock: socket.socket) -> bytes:
    """Send the gRPC client preface; return the server's first bytes (b"" when it hung up)."""
    sock.settimeout(5)
    sock.sendall(H2_PREFACE)
    return sock.recv(64)


def is_h2_settings(reply: bytes) -> bool:
    return len(reply) >= 9 and reply[3] == 0x04  # frame type SETTINGS: the server speaks HTTP/2 to us


def grpc_address(server: EmbeddedSeaweedFS, role: str, transport: str) -> str | tuple[str, int]:
    """The TCP port+10000 of ``role``, or the unix socket weed serves the same gRPC server on."""
    port = server.ports[role] + GRPC_OFFSET
    return ("127.0.0.1", port) if transport == "tcp" else f"/tmp/seaweedfs-{role}-grpc-{port}.sock"


def connect(address: str | tuple[str, int]) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(address)
        return sock
    return socket.create_connection(address, timeout=5)


def tls_context(server: EmbeddedSeaweedFS, cert: tuple[str, str] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.tls.ca))
    ctx.check_hostname = False  # the unix sockets have no host name
    ctx.set_alpn_protocols(["h2"])
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def grpc_over_tls(server: EmbeddedSeaweedFS, address: str | tuple[str, int], cert: tuple[str, str] | None) -> str:
    try:
        with connect(address) as raw, tls_context(server, cert).wrap_socket(raw) as sock:
            reply = h2_reply(sock)
    except (ssl.SSLError, ConnectionError) as err:
        return f"refused: {err}"
    return "served HTTP/2" if is_h2_settings(reply) else f"refused: closed after {reply[:16]!r}"


# ------------------------------------------------------------------------------------------------ HTTP ports
@pytest.mark.parametrize("role", HTTP_ROLES)
def test_http_port_refuses_plain_http_list_read_write_delete(server: EmbeddedSeaweedFS, role: str) -> None:
    pool = client()
    for method, path, body in attacks(server, role):
        result = outcome(pool, method, f"http://127.0.0.1:{server.ports[role]}{path}", body)
        assert result.startswith("refused"), f"{role} {method} {path}: {result}"


@pytest.mark.parametrize("role", HTTP_ROLES)
def test_http_port_refuses_tls_without_client_certificate(server: EmbeddedSeaweedFS, role: str) -> None:
    pool = client(ca_certs=str(server.tls.ca))  # trusts the server, presents nothing
    for method, path, body in attacks(server, role):
        result = outcome(pool, method, f"https://127.0.0.1:{server.ports[role]}{path}", body)
        assert result.startswith("refused"), f"{role} {method} {path}: {result}"


@pytest.mark.parametrize("role", HTTP_ROLES)
def test_http_port_refuses_certificate_of_another_ca(
    server: EmbeddedSeaweedFS, role: str, foreign_cert: tuple[str, str]
) -> None:
    pool = client(ca_certs=str(server.tls.ca), cert_file=foreign_cert[0], key_file=foreign_cert[1])
    for method, path, body in attacks(server, role):
        result = outcome(pool, method, f"https://127.0.0.1:{server.ports[role]}{path}", body)
        assert result.startswith("refused"), f"{role} {method} {path}: {result}"


def test_master_api_answers_the_store_certificate(server: EmbeddedSeaweedFS) -> None:
    """Control: the refusals above are the client certificate check, not a dead port."""
    status = server.master_json("/dir/status")
    assert status["Topology"]["DataCenters"], status


@pytest.mark.parametrize("role", ["volume", "filer"])
def test_data_paths_demand_jwt_even_with_the_store_certificate(server: EmbeddedSeaweedFS, role: str) -> None:
    with server.admin_http() as pool:
        for method, path, body in attacks(server, role):
            if path == "/status":  # the volume server's own status page is not object data
                continue
            result = outcome(pool, method, f"https://127.0.0.1:{server.ports[role]}{path}", body)
            assert result.startswith("answered 401"), f"{role} {method} {path}: {result}"


def test_filer_unix_socket_demands_jwt(server: EmbeddedSeaweedFS) -> None:
    """weed serves the filer's HTTP API in plain text on a /tmp socket too (for the S3 gateway): JWT guards it."""
    sock_path = f"/tmp/seaweedfs-filer-{server.ports['filer']}.sock"
    for method, path, body in attacks(server, "filer"):
        with connect(sock_path) as sock:
            conn = http.client.HTTPConnection("localhost")
            conn.sock = sock
            conn.request(method, path, body=body)
            response = conn.getresponse()
            assert response.status == 401, f"{method} {path}: {response.status} {response.read()[:200]!r}"


def test_weed_unix_sockets_are_owner_only(server: EmbeddedSeaweedFS) -> None:
    ours = {str(p) for port in server.ports.values() for p in (port, port + GRPC_OFFSET)}
    sockets = [p for p in Path("/tmp").glob("seaweedfs-*.sock") if p.stem.rsplit("-", 1)[-1] in ours]
    assert len(sockets) == 6, sockets  # 4 gRPC, the filer's HTTP and the S3 API
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in sockets}
    assert set(modes.values()) == {"0o700"}, modes


def test_secrets_and_data_are_owner_only(server: EmbeddedSeaweedFS) -> None:
    assert server.data_dir.stat().st_mode & 0o777 == 0o700
    for path in ("security.toml", "credentials.json", "s3.json", "tls/weed.key"):
        assert (server.data_dir / path).stat().st_mode & 0o777 == 0o600, path
    assert not list((server.data_dir / "tls").glob("ca.key*"))  # no one can mint another client certificate


# ------------------------------------------------------------------------------------------------ gRPC ports
@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("role", GRPC_ROLES)
def test_grpc_refuses_plaintext(server: EmbeddedSeaweedFS, role: str, transport: str) -> None:
    address = grpc_address(server, role, transport)
    with connect(address) as sock:
        try:
            reply = h2_reply(sock)
        except ConnectionError:
            reply = b""
    assert not is_h2_settings(reply), f"{address} serves plaintext gRPC"


@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("role", GRPC_ROLES)
def test_grpc_refuses_tls_without_client_certificate(server: EmbeddedSeaweedFS, role: str, transport: str) -> None:
    address = grpc_address(server, role, transport)
    result = grpc_over_tls(server, address, None)
    assert result.startswith("refused"), f"{address}: {result}"


@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("role", GRPC_ROLES)
def test_grpc_refuses_certificate_of_another_ca(
    server: EmbeddedSeaweedFS, role: str, transport: str, foreign_cert: tuple[str, str]
) -> None:
    address = grpc_address(server, role, transport)
    result = grpc_over_tls(server, address, foreign_cert)
    assert result.startswith("refused"), f"{address}: {result}"


@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("role", GRPC_ROLES)
def test_grpc_serves_the_store_certificate(server: EmbeddedSeaweedFS, role: str, transport: str) -> None:
    """Control: the same listeners speak gRPC's HTTP/2 to the holder of the certificate."""
    address = grpc_address(server, role, transport)
    tls = server.tls
    assert grpc_over_tls(server, address, (str(tls.cert), str(tls.key))) == "served HTTP/2", address


# ------------------------------------------------------------------------------------------------ S3
@pytest.mark.parametrize("where", ["tcp", "unix"])
def test_s3_refuses_anonymous_requests(server: EmbeddedSeaweedFS, where: str) -> None:
    path = f"/{server.bucket}/{SECRET_KEY}"
    if where == "tcp":
        response = client().request("GET", f"http://{server.endpoint}{path}")
        status, data = response.status, response.data
    else:
        with connect(f"/tmp/seaweedfs-s3-{server.ports['s3']}.sock") as sock:
            conn = http.client.HTTPConnection("localhost")
            conn.sock = sock
            conn.request("GET", path)
            answer = conn.getresponse()
            status, data = answer.status, answer.read()
    assert status == 403 and SECRET not in data, (status, data[:200])


def test_s3_with_credentials_reads_writes_lists_and_uploads_multipart(
    server: EmbeddedSeaweedFS, tmp_path: Path
) -> None:
    store = ArtifactStore(server.config(), part_size=5 << 20)
    assert store.get_bytes(SECRET_KEY) == SECRET  # also: none of the attacks above deleted it
    store.put_bytes("s3/check", b"ok")
    assert store.get_bytes("s3/check") == b"ok"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 << 20))  # three 5 MiB parts
    store.upload(big, "s3/big")
    store.download("s3/big", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    assert store.list_keys("s3/") == ["s3/big", "s3/check"]
    store.delete("s3/check")
    assert not store.exists("s3/check")
