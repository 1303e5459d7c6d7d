"""bench/scale.py's machinery, cheaply: the DAG cut after a step, the declared limits, the growth exponent and the
printed table (the benchmark itself runs minutes per N)."""

from __future__ import annotations

import json

import pytest

from bench.scale import ORDER, TEMPLATE, exponent, memory_limits, report, trimmed_template


def test_trimmed_template_stops_after_the_step() -> None:
    doc = trimmed_template(TEMPLATE, "camera-poses")
    main = next(t for t in doc["spec"]["templates"] if t["name"] == doc["spec"]["entrypoint"])
    names = [t["name"] for t in main["dag"]["tasks"]]
    assert "camera-poses" in names and "preprocess" in names and "quality-gate" in names
    assert not {"point-cloud", "mesh", "convert", "finalize"} & set(names)
    outputs = json.loads(doc["metadata"]["annotations"]["kai-flows.io/outputs"])
    assert outputs["cameras"] == "camera-poses.sparse" and "mesh" not in outputs and "report" not in outputs
    full = trimmed_template(TEMPLATE, "finalize")
    assert "finalize" in [t["name"] for t in full["spec"]["templates"][0]["dag"]["tasks"]]
    with pytest.raises(SystemExit, match="--steps 'sfm'"):
        trimmed_template(TEMPLATE, "sfm")


def test_declared_limits_come_from_the_template() -> None:
    limits = memory_limits(TEMPLATE)
    assert limits["camera-poses"] == 6 * 2**30 and limits["preprocess"] > 0


def test_exponent_is_the_log_log_slope() -> None:
    ns = [30, 100, 200, 300]
    assert exponent(ns, [0.5 * n**1.5 for n in ns]) == pytest.approx(1.5)
    assert exponent([100], [3.0]) is None and exponent(ns, [None, 2.0, None, None]) is None


def test_report_prints_steps_accuracy_ratio_and_exponents() -> None:
    def run(n: int) -> dict:
        step = {"wall": 0.1 * n, "cpu": 0.2 * n, "peak": 2**30, "limit": 6 * 2**30}
        return {"render_s": 1.0, "phase": "Succeeded", "steps": {"camera-poses": step, "preprocess": step},
                "ours": {"registered": n, "total": n, "pos_mean": 0.001, "pos_max": 0.003, "rot_mean": 0.02,
                         "pairing": "sequential+retrieval", "pairs": 7 * n, "mapper": "incremental"},
                "plain": {"wall": 0.05 * n * n, "cpu": 0.1 * n * n, "registered": n, "total": n, "peak": 2**29,
                          "pos_mean": 0.002, "pos_max": 0.005, "rot_mean": 0.05}}
    text = report({100: run(100), 200: run(200)}, "camera-poses")
    assert "200 camera-poses" in text and "1024" in text and "6144" in text
    assert "pos mean/max 1.00/3.00 mm" in text and "camera-poses/plain wall 0.01x" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert lines["camera-poses"].split()[-4:] == ["1.00"] * 4
    assert lines["plain"].split()[-4:] == ["2.00"] * 4
    assert ORDER.index("camera-poses") < ORDER.index("mesh")
