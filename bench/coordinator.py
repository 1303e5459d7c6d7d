"""Benchmark: the coordinator service under load. 3 replicas (`kai-flows coordinator` processes, API + admission
loop each) over the real PostgreSQL, a backend that completes jobs at once (the coordinator alone is measured),
1,000 jobs submitted through the API by 20 concurrent clients across the three queue classes.

    PYTHONPATH=. python bench/coordinator.py [--jobs 1000] [--clients 20] [--replicas 3] [--skip-kill]

Two runs, each on a fresh database:
1. **load**: clients submit as fast as they can. Printed: API latency p50/p99 of the submissions, admissions per
   second, and each class's share of the admissions made while all three classes had jobs waiting (the weights
   10/5/1 predict 62.5/31.3/6.3%). The classes' concurrency caps are set high (1000) so that the weighted order
   is what decides admission, not the caps.
2. **kill**: clients paced to about 40 submissions/s in all, each job taking `--job-seconds`; every 10 s one replica
   is SIGKILLed and started again a second later (what a Deployment does). Clients that hit the dead replica retry
   with the same idempotency key on the next one. Printed: jobs lost (not succeeded), jobs run twice (more than one
   workflow created, or more than one admission in the ledger), duplicate jobs per key.

Results are also written as JSON lines to bench/coordinator.out.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("KAI_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TOKEN = "bench-token-" + "0" * 20
CLASSES = ("interactive", "batch", "maintenance")
WEIGHTS = {"interactive": 10, "batch": 5, "maintenance": 1}


class InstantRunner:
    """A WorkflowRunner whose workflows succeed `$BENCH_JOB_SECONDS` after creation; each creation is a file made
    with O_EXCL (a second create of the same name finds it) and a line in creations.log (a second workflow for the
    same job would show there). Reached by the replicas as `--backend coordinator:InstantRunner`."""

    def __init__(self, state_dir: str | None = None) -> None:
        self.dir = Path(state_dir or ".")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.job_seconds = float(os.environ.get("BENCH_JOB_SECONDS", "0"))

    @staticmethod
    def workflow_name(job_id, attempt: int) -> str:  # type: ignore[no-untyped-def]
        from kai_flows.ledger.runner import job_workflow_name  # the runners' own naming

        return job_workflow_name(job_id, attempt)

    def submit(self, job) -> str:  # type: ignore[no-untyped-def]
        name = self.workflow_name(job.id, job.attempts)
        try:
            fd = os.open(self.dir / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return name
        os.close(fd)
        with open(self.dir / "creations.log", "a") as log:
            log.write(name + "\n")
        return name

    def status(self, workflow_name: str):  # type: ignore[no-untyped-def]
        from kai_flows.ledger.errors import WorkflowNotFound
        from kai_flows.ledger.runner import RunStatus

        try:
            age = time.time() - (self.dir / workflow_name).stat().st_mtime
        except FileNotFoundError:
            raise WorkflowNotFound(workflow_name) from None
        return RunStatus("Succeeded" if age >= self.job_seconds else "Running")

    def find_by_label(self, job_id, attempt: int) -> str | None:  # type: ignore[no-untyped-def]
        name = self.workflow_name(job_id, attempt)
        return name if (self.dir / name).exists() else None

    def cancel(self, workflow_name: str) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, index: int, url: str, state: Path, config: Path, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "kai_flows.cli", "coordinator", "--database-url", url, "--backend",
                     "coordinator:InstantRunner", "--state-dir", str(state), "--config", str(config),
                     "--api-addr", "127.0.0.1", "--api-port", str(self.port), "--metrics-addr", "127.0.0.1",
                     "--metrics-port", "0", "--claimer", f"replica-{index}"]
        self.env, self.log = env, log
        self.start()

    def start(self) -> None:
        import httpx

        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdout=self.log.open("a"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"replica did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


def fresh_database() -> str:
    import psycopg

    name = f"kai_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)


def drop_database(url: str) -> None:
    import psycopg

    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(args: argparse.Namespace, *, kill: bool) -> dict:
    from kai_flows.ledger.migrate import migrate
    from kai_flows.policy import load_policy
    from kai_flows.service import ApiError, CoordinatorClient, CoordinatorConfig

    url = fresh_database()
    migrate(url)
    tmp = Path(tempfile.mkdtemp(prefix="kai-bench-coordinator-"))
    raw = CoordinatorConfig.from_policy(load_policy()).model_dump(mode="json")
    for name, q in raw["queues"].items():
        q.update(concurrency=1000, weight=WEIGHTS[name])
    raw.update(poll_interval_seconds=0.1, lease_seconds=2.0)
    config = tmp / "coordinator.yaml"
    config.write_text(CoordinatorConfig.parse(raw).to_yaml())
    env = {**os.environ, "KAI_API_TOKEN": TOKEN, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'bench'}",
           "BENCH_JOB_SECONDS": str(args.job_seconds if kill else 0)}
    replicas = [Replica(i, url, tmp / "workflows", config, env, tmp / f"replica-{i}.log")
                for i in range(args.replicas)]
    latencies: list[float] = []
    failovers = Counter()
    lock = threading.Lock()
    plan = [CLASSES[k % 3] for k in range(args.jobs)]
    random.Random(7).shuffle(plan)
    next_job = iter(range(args.jobs))
    pace = 1.0 / (40 / args.clients) if kill else 0.0  # seconds between one client's submissions

    def client_loop(c: int) -> None:
        clients = [CoordinatorClient(r.url, TOKEN, retries=0, timeout=10) for r in replicas]
        mine = c % len(clients)
        while True:
            with lock:
                k = next(next_job, None)
            if k is None:
                break
            start = time.perf_counter()
            for attempt in range(20):  # the client's failover: the same key on the next replica
                try:
                    clients[(mine + attempt) % len(clients)].submit(
                        "image-quality", {"images": f"uploads/default/bench-{k}/"}, queue=plan[k],
                        idempotency_key=f"bench-{k}")
                    break
                except ApiError as e:
                    if e.status not in (0, 502, 503):
                        raise
                    with lock:
                        failovers[e.status] += 1
                    time.sleep(0.05)
            else:
                raise SystemExit(f"job {k}: no replica answered in 20 tries")
            with lock:
                latencies.append(time.perf_counter() - start)
            if pace:
                time.sleep(pace)
        for cl in clients:
            cl.close()

    stop_killing = threading.Event()
    kills = []

    def killer() -> None:
        rng = random.Random(11)
        while not stop_killing.wait(10):
            victim = rng.randrange(len(replicas))
            replicas[victim].proc.send_signal(signal.SIGKILL)
            replicas[victim].proc.wait()
            kills.append((time.time(), victim))
            time.sleep(1)
            replicas[victim].start()

    t0 = time.time()
    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(args.clients)]
    if kill:
        threads.append(threading.Thread(target=killer, daemon=True))
    for t in threads:
        t.start()
    for t in threads[: args.clients]:
        t.join()
    submitted_s = time.time() - t0
    result = wait_and_count(url, args.jobs, tmp / "workflows", timeout=600)
    stop_killing.set()
    for r in replicas:
        r.stop()
    shares = backlogged_shares(url)
    drop_database(url)
    lat = sorted(latencies)
    out = {
        "run": "kill" if kill else "load", "jobs": args.jobs, "clients": args.clients, "replicas": args.replicas,
        "api_p50_ms": round(1000 * statistics.median(lat), 1), "api_p99_ms": round(1000 * lat[int(0.99 * len(lat))], 1),
        "submit_wall_s": round(submitted_s, 1), **result, "kills": len(kills),
        "client_failovers": sum(failovers.values()),
        "share_while_all_backlogged": shares,
    }
    return out


def wait_and_count(url: str, n: int, workflows: Path, timeout: float) -> dict:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        deadline = time.monotonic() + timeout
        while conn.execute("SELECT count(*) AS n FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')"
                           ).fetchone()["n"] < n and time.monotonic() < deadline:
            time.sleep(0.5)
        jobs = conn.execute("SELECT count(*) AS n, count(*) FILTER (WHERE status = 'succeeded') AS ok, "
                            "count(DISTINCT idempotency_key) AS keys FROM jobs").fetchone()
        admissions = conn.execute(
            "SELECT job_id, count(*) AS n FROM job_status_history WHERE to_status = 'submitted' GROUP BY job_id"
        ).fetchall()
        span = conn.execute(
            "SELECT min(at) AS first, max(at) AS last, count(*) AS n FROM job_status_history "
            "WHERE to_status = 'submitted'").fetchone()
    creations = Counter((workflows / "creations.log").read_text().split())
    seconds = (span["last"] - span["first"]).total_seconds() or 1e-9
    return {
        "jobs_in_ledger": jobs["n"], "succeeded": jobs["ok"], "lost": n - jobs["ok"],
        "duplicate_jobs_per_key": jobs["n"] - jobs["keys"],
        "admitted_twice": sum(1 for r in admissions if r["n"] > 1),
        "workflows_created_twice": sum(1 for v in creations.values() if v > 1),
        "admissions_per_s": round(span["n"] / seconds, 1),
    }


def backlogged_shares(url: str) -> dict:
    """Each class's share of the admissions made while every class had a job waiting (created, not admitted)."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        rows = conn.execute(
            """SELECT j.queue_class, j.created_at, h.at AS admitted_at, h.id FROM jobs j
               JOIN job_status_history h ON h.job_id = j.id AND h.to_status = 'submitted'""").fetchall()
    events = sorted([(r["created_at"], 0, 0, r["queue_class"]) for r in rows]
                    + [(r["admitted_at"], 1, r["id"], r["queue_class"]) for r in rows])
    waiting: Counter[str] = Counter()
    admitted: Counter[str] = Counter()
    for _, kind, _, q in events:
        if kind == 0:
            waiting[q] += 1
            continue
        if all(waiting[c] > 0 for c in CLASSES):
            admitted[q] += 1
        waiting[q] -= 1
    total = sum(admitted.values())
    expected = {c: round(100 * WEIGHTS[c] / sum(WEIGHTS.values()), 1) for c in CLASSES}
    return {"admissions": total, "percent": {c: round(100 * admitted[c] / total, 1) if total else None
                                             for c in CLASSES}, "expected_percent": expected}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--job-seconds", type=float, default=1.0, help="how long each job runs in the kill run")
    ap.add_argument("--skip-kill", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    results = [run(args, kill=False)]
    print(json.dumps(results[-1]), flush=True)
    if not args.skip_kill:
        results.append(run(args, kill=True))
        print(json.dumps(results[-1]), flush=True)
    with open(Path(__file__).with_name("coordinator.out.jsonl"), "a") as f:
        for r in results:
            f.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **r}) + "\n")


if __name__ == "__main__":
    main()
