"""Argo's node ids and pod names, checked against values derived independently of the code under test."""

from __future__ import annotations

import pytest

from kai_flows.argo.names import argo_artifact_key, argo_node_id, argo_pod_name, fnv32a


def reference_fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bit, straight from the FNV spec (draft-eastlake-fnv): offset basis 2166136261, prime 16777619."""
    hash_ = 2166136261
    for octet in data:
        hash_ ^= octet
        hash_ = (hash_ * 16777619) % 2**32
    return hash_


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0x811C9DC5),  # FNV spec test vectors
        ("a", 0xE40C292C),
        ("foobar", 0xBF9CF968),
        ("hello", 1335831723),  # Argo's own UI test (ui/src/shared/pod-name.test.ts)
        ("world", 933488787),
        ("こんにちは", 486186189),
    ],
)
def test_fnv32a_known_values(text: str, expected: int) -> None:
    assert fnv32a(text) == expected
    assert reference_fnv1a_32(text.encode()) == expected


def test_fnv32a_is_fnv1a_not_fnv1() -> None:
    fnv1 = 2166136261
    for octet in b"nodename":
        fnv1 = (fnv1 * 16777619) % 2**32 ^ octet
    assert fnv32a("nodename") == reference_fnv1a_32(b"nodename") != fnv1


def test_node_id_and_pod_name_follow_argo() -> None:
    wf, node = "reconstruct-x7k2p", "reconstruct-x7k2p.sfm"
    digest = reference_fnv1a_32(node.encode())
    assert argo_node_id(wf, node) == f"reconstruct-x7k2p-{digest}"
    assert argo_pod_name(wf, "camera-poses", node) == f"reconstruct-x7k2p-camera-poses-{digest}"


def test_fan_out_children_hash_their_full_node_name() -> None:
    a = argo_pod_name("wf", "resize", "wf.resize(0:a.jpg)")
    b = argo_pod_name("wf", "resize", "wf.resize(1:b.jpg)")
    assert a != b
    assert a == f"wf-resize-{reference_fnv1a_32(b'wf.resize(0:a.jpg)')}"


def test_root_node_is_the_workflow_name() -> None:
    assert argo_node_id("wf-abc", "wf-abc") == "wf-abc"
    assert argo_pod_name("wf-abc", "main", "wf-abc") == "wf-abc"


def test_empty_template_name_leaves_the_dash_out() -> None:
    assert argo_pod_name("wf", "", "wf.x") == f"wf-{reference_fnv1a_32(b'wf.x')}"


def test_long_names_are_truncated_like_argo() -> None:
    # The names from Argo's pod_name_test.go: the prefix is cut to 253 - 10 - 1 = 242 characters.
    long_wf = (
        "alongworkflownamethatincludeslotsofdetailsandisessentiallyalargerunonsentencewithpoorstyleand"
        "nopunctuationtobehadwhatsoever"
    )
    long_template = (
        "alongtemplatenamethatincludessliightlymoredetailsandiscertainlyalargerunonstnencewithevenworse"
        "stylisticconcernsandpreposterouslyeliminatespunctuation"
    )
    name = argo_pod_name(long_wf, long_template, "nodename")
    prefix, _, digest = name.rpartition("-")
    assert prefix == f"{long_wf}-{long_template}"[:242]
    assert digest == str(reference_fnv1a_32(b"nodename"))
    assert len(name) <= 253


def test_artifact_key_is_argo_default_key_format() -> None:
    pod = argo_pod_name("wf", "sfm", "wf.sfm")
    assert argo_artifact_key("wf", pod, "sparse") == f"wf/{pod}/sparse"
    with pytest.raises(ValueError, match="artifact name"):
        argo_artifact_key("wf", pod, "a/b")
