"""A coordinator that SIGKILLs itself at one point of its Nth submission (run as a real process by the tests).

argv: database URL, queue config JSON, backend state dir, N, when:
  "in-claim":  inside the Nth claim's transaction (the job marked submitted, not committed);
  "before":    claimed (committed) but nothing submitted;
  "after":     workflow created and labelled, its name not yet recorded in the ledger;
  "in-record": inside the transaction recording the Nth job's final status (the workflow has ended).
"""

import os
import signal
import sys

from fake_runner import SubprocessRunner  # this script's folder is on sys.path

from kai_flows.ledger import claim, jobs
from kai_flows.ledger.coordinator import Coordinator
from kai_flows.ledger.models import TERMINAL
from kai_flows.policy import parse_task_queue_config

url, config, state_dir, n, when = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Crashing(SubprocessRunner):
    submits = 0

    def submit(self, job):  # type: ignore[no-untyped-def]
        Crashing.submits += 1
        if Crashing.submits == n and when == "before":
            die()
        name = super().submit(job)
        if Crashing.submits == n and when == "after":
            die()
        return name


claims = 0
finals = 0
plain_append = jobs._append_history


def append_in_claim(*args):  # type: ignore[no-untyped-def]
    global claims
    claims += 1
    plain_append(*args)
    if claims == n and when == "in-claim":
        die()  # the claim's UPDATE and history row are written, the transaction is open


def append_in_record(conn, job_id, old, new, *rest):  # type: ignore[no-untyped-def]
    global finals
    plain_append(conn, job_id, old, new, *rest)
    if new in TERMINAL:
        finals += 1
        if finals == n and when == "in-record":
            die()  # the final status and its outputs are written, the transaction is open


claim._append_history = append_in_claim
jobs._append_history = append_in_record
coordinator = Coordinator(url, Crashing(state_dir), parse_task_queue_config(config), 0.05, lease_seconds=0.5)
while True:
    coordinator.run_once()
