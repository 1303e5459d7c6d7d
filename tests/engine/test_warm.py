"""Warm starts (zygote.py): entry-point steps forked from a process that already imported their module behave
like cold starts - own process and cwd, same outputs, deadlines kill them, failures keep their message."""

from __future__ import annotations

import json
import os

import pytest

from tests.engine.wf import dag, workflow

ENTRY = ["python", "-m", "kai_flows.entrypoint"]


def entry(name: str, ref: str, *args: str, **extra) -> dict:
    return {"name": name, "container": {"image": "test", "command": ENTRY, "args": [ref, *args]}, **extra}


def pipeline() -> dict:
    say = entry("say", "tests.engine._steps:say", "--param", "text={{inputs.parameters.t}}",
                "--artifact", "out={{outputs.artifacts.out.path}}",
                inputs={"parameters": [{"name": "t"}]},
                outputs={"artifacts": [{"name": "out", "path": "/o/out", "archive": {"none": {}}}]})
    return workflow([dag("main", [{"name": "fan", "template": "say", "withItems": ["a", "b", "c"],
                                   "arguments": {"parameters": [{"name": "t", "value": "{{item}}"}]}}]), say])


@pytest.mark.parametrize("warm", [True, False])
def test_warm_and_cold_give_the_same_outputs(run, store, tmp_path, warm):
    r = run(pipeline(), warm_starts=warm, out=tmp_path / f"out-{warm}")
    assert r.phase == "Succeeded", r.message
    pids = set()
    for item in "abc":
        node = next(n for n in r.nodes.values() if n.display_name == f"fan({'abc'.index(item)}:{item})")
        said = json.loads(node.outputs["result"])
        assert said["text"] == item and said["cwd"].endswith(node.id)  # its own scratch folder
        pids.add(said["pid"])
        key = node.outputs["artifacts"][0]["s3"]["key"]
        assert store.get_bytes(key) == item.encode()
    assert len(pids) == 3 and os.getpid() not in pids
    record = json.loads(r.record.read_text())
    flags = {n["kai"].get("warmStart") for n in record["nodes"].values() if n["type"] == "Pod"}
    assert flags == {warm}


def test_warm_step_deadline_and_failure(run):
    nap = entry("nap", "tests.engine._steps:nap", "--param", "seconds=30", activeDeadlineSeconds="1")
    refuse = entry("refuse", "tests.engine._steps:refuse", "--param", "reason=no thanks")
    doc = workflow([dag("main", [{"name": "nap", "template": "nap"}, {"name": "refuse", "template": "refuse"}],
                        dag_extra={"failFast": False}), nap, refuse])
    r = run(doc)
    assert r.node("nap").phase == "Failed" and "deadline" in r.node("nap").message
    refused = r.node("refuse")
    assert refused.phase == "Failed" and "exit code 1" in refused.message and "no thanks" in refused.message


def test_learning_a_lazily_loaded_packages_submodules_keeps_it_usable() -> None:
    """The server learns the modules a step imported; torch reached through lazy_loader was still a placeholder in
    the server, and importing `torch._C` under it broke torch: the server died and the radiance-field step's
    first attempt ended in Error every time. Run in a process of its own: the failure was a segfault."""
    import subprocess
    import sys

    code = ("import json, lazy_loader\n"
            "torch = lazy_loader.load('torch')\n"
            "from kai_flows.engine.zygote import _learn\n"
            "_learn(json.dumps(['torch._C', 'torch._dynamo', 'torch']).encode())\n"
            "print(torch.zeros(2).sum().item())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "0.0"), done.stderr[-2000:]
