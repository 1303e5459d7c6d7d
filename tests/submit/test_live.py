"""Against a real cluster, only when one is configured (KAI_ARGO_SERVER, or a kubeconfig / in-cluster config).

Set KAI_LIVE_PIPELINE (default image-quality) and KAI_LIVE_PARAMS (JSON, default {"images": "kai-live-test/"})
for the template deployed there. The test submits, finds the workflow by its job label, checks the cluster kept
the queue semaphore, priority and tier class, and terminates it: it leaves no running work behind.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from kai_flows.submit import SubmitRequest, Submitter, cluster_configured

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not cluster_configured(), reason="no cluster configured: set KAI_ARGO_SERVER (+KAI_ARGO_TOKEN) "
                                                        "or provide a kubeconfig to run the live submission test"),
]


def test_submit_find_terminate_on_a_real_cluster() -> None:
    sub = Submitter()
    pipeline = os.environ.get("KAI_LIVE_PIPELINE", "image-quality")
    params = json.loads(os.environ.get("KAI_LIVE_PARAMS", '{"images": "kai-live-test/"}'))
    job = f"live-{uuid.uuid4().hex[:12]}"
    name = sub.submit(SubmitRequest(pipeline=pipeline, parameters=params, tier="internal", job_id=job))
    try:
        [found] = sub.find(job)
        assert found.name == name
        wf = sub.backend.get(name, found.namespace)
        assert wf["spec"]["synchronization"]["semaphores"][0]["configMapKeyRef"]["key"] == "maintenance"
        assert wf["spec"]["podPriorityClassName"] == "maintenance"
    finally:
        sub.cancel(name)
    assert sub.wait(name, timeout=120, poll=2).phase in ("Failed", "Error", "Succeeded")
