"""EmbeddedSeaweedFS: restart on the same data, clear start errors, process handling."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from kai_flows.store import EmbeddedSeaweedFS, SeaweedStartError
from kai_flows.store.seaweed import pick_ports


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive either
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.slow  # starts, kills or waits out its own SeaweedFS
def test_restart_on_same_dir_keeps_objects_and_keys(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "x.bin").write_bytes(os.urandom(50_000))
    with EmbeddedSeaweedFS(tmp_path / "data") as first:
        store = first.store()
        store.upload(src, "wf/pod/out")
        store.put_bytes("wf/pod/param", b"42")
        keys, pid = (first.access_key, first.secret_key), first.pid
        assert pid is not None and alive(pid)
    assert not alive(pid)
    assert not any(Path("/tmp").glob(f"seaweedfs-*-{first.ports['s3']}.sock"))
    with EmbeddedSeaweedFS(tmp_path / "data") as second:
        assert (second.access_key, second.secret_key) == keys  # credentials persist with the data
        store = second.store()
        assert store.exists("wf/pod/out")
        store.download("wf/pod/out", tmp_path / "back")
        assert (tmp_path / "back" / "sub" / "x.bin").read_bytes() == (src / "sub" / "x.bin").read_bytes()
        assert store.get_bytes("wf/pod/param") == b"42"
        store.put_bytes("wf/pod/after", b"new")  # writes after a restart do not clash with old file ids
        assert store.get_bytes("wf/pod/after") == b"new"
        assert store.get_bytes("wf/pod/param") == b"42"


def test_data_dir_in_use_is_refused(seaweed_server: EmbeddedSeaweedFS) -> None:
    with pytest.raises(SeaweedStartError, match="in use by another embedded SeaweedFS"):
        EmbeddedSeaweedFS(seaweed_server.data_dir).start()
    assert seaweed_server.running


def test_taken_port_is_named(tmp_path: Path) -> None:
    ports = pick_ports(4)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[3]))
        squatter.listen()
        with pytest.raises(SeaweedStartError, match=f"port {ports[3]} \\(for the s3 server\\) is already in use"):
            EmbeddedSeaweedFS(tmp_path / "data", ports=tuple(ports)).start()  # type: ignore[arg-type]
    # the lock was released: the same directory starts fine afterwards
    with EmbeddedSeaweedFS(tmp_path / "data") as server:
        assert server.running


def test_grpc_port_counts_too(tmp_path: Path) -> None:
    ports = pick_ports(4)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[0] + 10000))
        with pytest.raises(SeaweedStartError, match=f"port {ports[0] + 10000} \\(for the master server\\)"):
            EmbeddedSeaweedFS(tmp_path / "data", ports=tuple(ports)).start()  # type: ignore[arg-type]


def test_port_above_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SeaweedStartError, match="must be below 55535"):
        EmbeddedSeaweedFS(tmp_path / "data", ports=(20001, 20002, 20003, 60000)).start()


@pytest.mark.slow  # starts, kills or waits out its own SeaweedFS
def test_start_timeout_quotes_the_log_and_cleans_up(tmp_path: Path) -> None:
    server = EmbeddedSeaweedFS(tmp_path / "data", start_timeout=0.3)
    with pytest.raises(SeaweedStartError, match=r"not ready after 0s; log tail: .+weed\.log") as info:
        server.start()
    assert "\n" not in str(info.value)
    assert not server.running
    with EmbeddedSeaweedFS(tmp_path / "data") as again:  # nothing was left holding the directory
        assert again.running


def test_weed_failure_quotes_its_log(tmp_path: Path) -> None:
    server = EmbeddedSeaweedFS(tmp_path / "data", extra_args=["-no.such.flag=1"], start_timeout=20)
    with pytest.raises(SeaweedStartError, match=r"weed exited with code \d+ while starting; log tail: .*no.such.flag"):
        server.start()
    assert not server.running


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "volumes").write_text("a file where a directory belongs")
    with pytest.raises(SeaweedStartError, match="cannot use data dir .*volumes: File exists"):
        EmbeddedSeaweedFS(tmp_path / "data").start()


def test_missing_weed_binary(tmp_path: Path) -> None:
    with pytest.raises(SeaweedStartError, match="cannot run the SeaweedFS binary .*no-weed"):
        EmbeddedSeaweedFS(tmp_path / "data", weed=str(tmp_path / "no-weed")).start()


@pytest.mark.slow  # starts, kills or waits out its own SeaweedFS
def test_port_grabbed_before_weed_binds_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The picked ports are free when checked but taken before weed binds them: weed exits, new ports are picked.
    taken, free = pick_ports(4), pick_ports(4)
    batches = iter([taken, free])
    monkeypatch.setattr("kai_flows.store.seaweed.pick_ports", lambda: next(batches))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken[3]))
        squatter.listen()
        with EmbeddedSeaweedFS(tmp_path / "data") as server:
            assert server.ports["s3"] == free[3]
            assert server.store().exists("nothing/here") is False


def test_warm_up_grows_the_bucket_and_leaves_nothing_behind(seaweed_server: EmbeddedSeaweedFS) -> None:
    store = seaweed_server.store("warm-up-check", warm_up=True)
    assert store.list_keys("") == [] and not store.exists("kai-flows-warm-up")  # objects and manifest gone
    status = seaweed_server.master_json("/vol/status")
    racks = status["Volumes"]["DataCenters"]["DefaultDataCenter"].values()
    collections = {v["Collection"] for rack in racks for volumes in rack.values() for v in volumes}
    assert "warm-up-check" in collections  # the volumes exist before the first real write
