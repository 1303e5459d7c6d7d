"""A coordinator that SIGKILLs itself around its Nth submission (run as a real process by the tests).

argv: database URL, queue config JSON, backend state dir, N, when ("before": claimed but nothing submitted;
"after": workflow created and labelled, its name not yet recorded in the ledger).
"""

import os
import signal
import sys

from fake_runner import SubprocessRunner  # this script's folder is on sys.path

from kai_flows.ledger.coordinator import Coordinator
from kai_flows.policy import parse_task_queue_config

url, config, state_dir, n, when = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]


class Crashing(SubprocessRunner):
    submits = 0

    def submit(self, job):  # type: ignore[no-untyped-def]
        Crashing.submits += 1
        if Crashing.submits == n and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        name = super().submit(job)
        if Crashing.submits == n and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return name


coordinator = Coordinator(url, Crashing(state_dir), parse_task_queue_config(config), 0.05, lease_seconds=0.5)
while True:
    coordinator.run_once()
