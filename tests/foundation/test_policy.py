import json

import pytest

from kai_flows.policy import PolicyError, build_policy, load_policy, parse_task_queue_config


def test_guide_values_are_the_defaults():
    policy = build_policy()
    assert sorted(policy.pools) == sorted([
        "cpu-optimized", "gpu-optimized", "gpu-high-end", "memory-optimized", "storage-optimized", "orchestration",
        "spot-instances"])
    assert list(policy.priority_classes) == [
        "system-critical", "interactive", "high-priority-batch", "medium-priority-batch", "low-priority-batch",
        "maintenance", "preemptible"]
    values = [c.value for c in policy.priority_classes.values()]
    assert values == sorted(values, reverse=True), "classes are listed from most to least urgent"
    assert policy.default_priority_class.name == "medium-priority-batch"
    assert {k: (q.concurrency, q.weight) for k, q in policy.queues.items()} == {
        "interactive": (5, 10), "batch": (10, 5), "maintenance": (2, 1)}


def test_gpu_pools_tolerate_their_taints():
    pool = build_policy().pool("gpu-high-end")
    assert pool.node_selector == {"kai.io/node-pool": "gpu-high-end"}
    keys = {(t["key"], t.get("value")) for t in pool.tolerations()}
    assert ("kai.io/node-pool", "gpu-high-end") in keys and ("nvidia.com/gpu", None) in keys


def test_queue_config_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KAI_TASK_QUEUE_CONFIG", '{"batch":{"concurrency":3,"weight":2},'
                       '"interactive":{"concurrency":1,"weight":9},"maintenance":{"concurrency":1,"weight":1}}')
    assert load_policy().queue("batch").concurrency == 3
    f = tmp_path / "queues.json"
    f.write_text(json.dumps({"batch": {"concurrency": 7, "weight": 1}, "interactive": {"concurrency": 1, "weight": 1},
                             "maintenance": {"concurrency": 1, "weight": 1}}))
    monkeypatch.setenv("KAI_TASK_QUEUE_CONFIG", str(f))
    assert load_policy().queue("batch").concurrency == 7


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[]", "non-empty JSON object"),
    ('{"batch":{"concurrency":0,"weight":1}}', "queue class 'batch': concurrency"),
    ('{"batch":{"concurrency":"x","weight":1}}', "queue class 'batch': concurrency"),
    ('{"batch":{"weight":1}}', "queue class 'batch': concurrency"),
])
def test_bad_queue_config_is_named(text, message):
    with pytest.raises(PolicyError, match=message):
        parse_task_queue_config(text)


def test_a_tier_needing_a_missing_queue_is_refused():
    with pytest.raises(PolicyError, match="tier 'free' uses queue class 'batch'"):
        build_policy('{"interactive":{"concurrency":1,"weight":1},"maintenance":{"concurrency":1,"weight":1}}')


def test_unknown_names_list_the_known_ones():
    with pytest.raises(PolicyError, match="unknown tier 'gold'; known: enterprise, free, internal, pro"):
        build_policy().tier("gold")


def test_free_tier_patch_moves_pods_to_spot_at_low_priority():
    policy = build_policy()
    patch = json.loads(policy.tier_pod_spec_patch(policy.tier("free")))
    assert patch["priorityClassName"] == "low-priority-batch"
    assert patch["nodeSelector"] == {"kai.io/node-pool": "spot-instances"}
    assert patch["tolerations"][0]["value"] == "spot-instances"
    assert json.loads(policy.tier_pod_spec_patch(policy.tier("enterprise"))) == {
        "priorityClassName": "high-priority-batch"}
