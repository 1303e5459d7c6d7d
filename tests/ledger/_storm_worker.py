"""One claimer of the claim storm (run as a real process by test_ledger_claim.py).

argv: database URL, queue config JSON, hold (max ms a job stays in flight; -1 keeps every claimed job in flight).
Prints "ready" once connected, starts claiming when a line arrives on stdin, then prints one JSON object: the ids
it claimed and every in-flight count it saw.
"""

import json
import random
import sys
import time

from kai_flows.ledger import jobs
from kai_flows.ledger.claim import claim_next
from kai_flows.ledger.db import connect
from kai_flows.policy import parse_task_queue_config

url, config, hold_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
queues = parse_task_queue_config(config)
conn = connect(url)
me = f"worker-{random.randrange(1 << 30)}"
claimed, seen = [], []
print("ready", flush=True)
sys.stdin.readline()  # the start signal: every worker begins at once
while True:
    job = claim_next(conn, queues, me, lease_seconds=120)
    if job is None:
        if conn.execute("SELECT count(*) AS n FROM jobs WHERE status = 'queued'").fetchone()["n"] == 0:
            break
        time.sleep(0.002)
        continue
    claimed.append(str(job.id))
    # A fresh single-statement snapshot right after the claim committed: a count over the cap here is a real breach.
    n = conn.execute(
        "SELECT count(*) AS n FROM jobs WHERE queue_class = %s AND status IN ('submitted', 'running')",
        (job.queue_class,),
    ).fetchone()["n"]
    seen.append([job.queue_class, n])
    if hold_ms >= 0:
        jobs.transition(conn, job.id, "running", actor=me)
        time.sleep(random.uniform(0, hold_ms) / 1000)
        jobs.transition(conn, job.id, "succeeded", actor=me)
print(json.dumps({"claimed": claimed, "seen": seen}))
