"""Throughput of the artifact store against a plain ``cp -r``.

Makes a directory of ``--size-mib`` MiB (16 MiB files, plus 1000 small files), then times, ``--runs`` times each:
``cp -r`` of it, and ``ArtifactStore.upload`` + ``download`` of it through an embedded SeaweedFS. Prints the
medians and the ratio of the store's round-trip throughput to the copy's (goal: at least 0.5).

    PYTHONPATH=. python bench/store_throughput.py [--size-mib 1024] [--runs 3] [--workers 8] [--part-size-mib 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from kai_flows.store import EmbeddedSeaweedFS

MiB = 1 << 20
BIG_FILE = 16 * MiB
SMALL_FILES = 1000


def make_dataset(root: Path, size_mib: int) -> int:
    """Random (incompressible) data: size_mib MiB in 16 MiB files, plus 1000 files of 1-8 KiB; returns bytes."""
    total = 0
    big = root / "big"
    big.mkdir(parents=True)
    remaining = size_mib * MiB
    index = 0
    while remaining > 0:
        size = min(BIG_FILE, remaining)
        (big / f"part-{index:04}.bin").write_bytes(os.urandom(size))
        remaining -= size
        total += size
        index += 1
    for i in range(SMALL_FILES):
        small = root / "small" / f"d{i % 20:02}"
        small.mkdir(parents=True, exist_ok=True)
        data = os.urandom(1024 + (i * 7919) % 7168)
        (small / f"f{i:04}.dat").write_bytes(data)
        total += len(data)
    return total


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user+system) of this process and its waited-for children, or of another process by pid."""
    if pid is None:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the big files in MiB (default 1024)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8, help="ArtifactStore thread pool size")
    parser.add_argument("--part-size-mib", type=int, default=32, help="multipart part size (min 5)")
    parser.add_argument("--no-sha256", action="store_true", help="skip the sha256 check on download")
    parser.add_argument("--workdir", type=Path, default=None, help="where to put the data (default: a temp dir)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kai-store-bench-", dir=args.workdir))
    try:
        src = work / "src"
        total = make_dataset(src, args.size_mib)
        print(f"dataset: {total / MiB:.1f} MiB in {sum(1 for p in src.rglob('*') if p.is_file())} files at {src}")

        cp_times: list[float] = []
        up_times: list[float] = []
        down_times: list[float] = []
        cp_cpu = store_cpu = 0.0
        with EmbeddedSeaweedFS(work / "seaweed") as server:
            store = server.store(
                workers=args.workers, part_size=args.part_size_mib * MiB, verify_sha256=not args.no_sha256
            )
            # cp and store runs alternate, so that both see the same machine load
            for run in range(args.runs):
                dst = work / f"cp-{run}"
                before = cpu_seconds()
                cp_times.append(timed(lambda dst=dst: subprocess.run(["cp", "-r", str(src), str(dst)], check=True)))
                cp_cpu += cpu_seconds() - before
                shutil.rmtree(dst)
                key, dst = f"bench/run-{run}/data", work / f"dl-{run}"
                before = cpu_seconds() + cpu_seconds(server.pid)
                up_times.append(timed(lambda key=key: store.upload(src, key)))
                down_times.append(timed(lambda key=key, dst=dst: store.download(key, dst)))
                store_cpu += cpu_seconds() + cpu_seconds(server.pid) - before
                shutil.rmtree(dst)
                store.delete_prefix(f"bench/run-{run}/")

        def rate(seconds: float) -> float:
            return total / MiB / seconds

        cp_med = statistics.median(cp_times)
        up_med, down_med = statistics.median(up_times), statistics.median(down_times)
        rt_med = statistics.median(u + d for u, d in zip(up_times, down_times, strict=True))
        print(f"cp -r             median {cp_med:6.2f} s  {rate(cp_med):7.1f} MiB/s  runs {_fmt(cp_times)}")
        print(f"store upload      median {up_med:6.2f} s  {rate(up_med):7.1f} MiB/s  runs {_fmt(up_times)}")
        print(f"store download    median {down_med:6.2f} s  {rate(down_med):7.1f} MiB/s  runs {_fmt(down_times)}")
        print(f"store up+down     median {rt_med:6.2f} s  {rate(rt_med):7.1f} MiB/s")
        print(
            f"ratio store/cp: round trip {cp_med / rt_med:.2f}, upload {cp_med / up_med:.2f}, "
            f"download {cp_med / down_med:.2f} (goal: round trip >= 0.5) "
            f"[workers={args.workers}, part={args.part_size_mib} MiB, sha256 check={not args.no_sha256}]"
        )
        gib = total / (1 << 30) * args.runs
        print(
            f"CPU cost (all processes, user+sys): cp -r {cp_cpu / gib:.2f} s/GiB, "
            f"store up+down (python + weed) {store_cpu / gib:.2f} s/GiB"
        )
        print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fmt(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    main()
