"""Local-engine benchmarks (printed figures, no asserts).

(a) 200 no-op tasks fanned out through the engine vs the same 200 processes spawned directly at the same
    parallelism: the engine's overhead per task (goal <= 30 ms).
(b) the store's throughput: bench/store_throughput.py (the store's own benchmark), when present.
(c) image-quality on ../shared/datasets/fountain_p11 through the engine vs one fresh Python process that imports
    the steps and calls them in turn: the engine's share of the wall time (goal < 10%). The engine runs with
    parallelism 1 so the comparison is with one serial process; warm starts (the default) and cold starts
    (`--cold`, every step a fresh interpreter as in a pod) are both measured.

    PYTHONPATH=. python bench/engine.py [--tasks 200] [--parallelism N] [--repeat 3] [--skip-quality] [--skip-store]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kai_flows.engine import run_pipeline  # noqa: E402
from kai_flows.store import EmbeddedSeaweedFS  # noqa: E402

NOOP = [sys.executable, "-c", "pass"]
DATASET = REPO.parent / "shared" / "datasets" / "fountain_p11" / "images"
ONE_PROCESS = """
import sys
from pathlib import Path
from kai_steps.quality import aggregate_quality, assess_image, list_images
images, out = Path(sys.argv[1]), Path(sys.argv[2])
listing = list_images(images)
scores = [assess_image(images / name, image_name=name) for name in listing.names]
aggregate_quality(images, scores, out)
"""


def fanout_doc(n: int) -> dict:
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "bench-noop"},
        "spec": {"entrypoint": "main", "templates": [
            {"name": "main", "dag": {"tasks": [{"name": "noop", "template": "noop",
                                                "withSequence": {"count": str(n)}}]}},
            {"name": "noop", "container": {"image": "python", "command": ["python", "-c", "pass"]}},
        ]},
    }


def bench_fanout(store, n: int, parallelism: int, work: Path) -> None:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(parallelism) as pool:
        list(pool.map(lambda _: subprocess.run(NOOP, check=True), range(n)))
    direct = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = run_pipeline(fanout_doc(n), out=work / "fanout", store=store, parallelism=parallelism, progress=False,
                     cache=work / "cache")
    engine = time.perf_counter() - t0
    assert r.phase == "Succeeded", r.message
    print(f"(a) {n} no-op tasks, parallelism {parallelism}: direct {direct:.2f}s, engine {engine:.2f}s "
          f"-> overhead {(engine - direct) / n * 1000:.1f} ms/task (goal <= 30 ms)")


def bench_store() -> None:
    script = REPO / "bench" / "store_throughput.py"
    if not script.exists():
        print("(b) bench/store_throughput.py not present: skipped")
        return
    print("(b) store throughput (bench/store_throughput.py):", flush=True)
    subprocess.run([sys.executable, str(script)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def bench_quality(store, work: Path, repeat: int) -> None:
    template = REPO / "workflow_templates" / "image-quality.yaml"
    if not template.exists() or not DATASET.is_dir():
        print("(c) image-quality template or fountain_p11 missing: skipped")
        return
    from kai_steps.quality import list_images

    listing = list_images(DATASET)
    def cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    # A first run on new photos uploads them; a re-run finds the same content already in the store.
    for warm, fresh_input in ((True, True), (True, False), (False, True)):
        # several alternating runs, medians reported (timings here are noisy)
        inproc_runs, engine_runs, step_runs = [], [], []
        for rep in range(repeat):
            # the baseline: one fresh Python process importing the steps and calling them in turn
            t0, c0 = time.perf_counter(), cpu()
            report = work / f"inproc-{warm}-{fresh_input}-{rep}"
            subprocess.run([sys.executable, "-c", ONE_PROCESS, str(DATASET), str(report)],
                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
            inproc_runs.append((time.perf_counter() - t0, cpu() - c0))
            if fresh_input:
                store.delete_prefix("inputs/")
            t0, c0 = time.perf_counter(), cpu()
            r = run_pipeline(template, inputs={"images": DATASET}, out=work / f"quality-{warm}-{fresh_input}-{rep}",
                             store=store, parallelism=1, progress=False, cache=work / "cache", warm_starts=warm)
            engine_runs.append((time.perf_counter() - t0, cpu() - c0))  # CPU: engine + steps (not the S3 server)
            assert r.phase == "Succeeded", r.message
            step_runs.append(sum(n.wall_seconds or 0 for n in r.nodes.values() if n.type == "Pod"))
        inproc, inproc_cpu = (statistics.median(x) for x in zip(*inproc_runs, strict=True))
        engine, engine_cpu = (statistics.median(x) for x in zip(*engine_runs, strict=True))
        steps = statistics.median(step_runs)
        shares = [f"{x:.0f}" for x in sorted((e - i) / e * 100 for (i, _), (e, _) in
                                             zip(inproc_runs, engine_runs, strict=True))]
        print(f"(c) image-quality on fountain_p11 ({listing.count} images), parallelism 1, "
              f"{'warm' if warm else 'cold'} starts, {'input uploaded' if fresh_input else 'input already stored'}, "
              f"median of {repeat}: in one process {inproc:.2f}s wall / "
              f"{inproc_cpu:.2f}s CPU, engine {engine:.2f}s wall / {engine_cpu:.2f}s CPU (step processes "
              f"{steps:.2f}s wall) -> engine share {(engine - inproc) / engine * 100:.1f}% of wall "
              f"(runs: {', '.join(shares)}%), {(engine_cpu - inproc_cpu) / engine_cpu * 100:.1f}% of CPU "
              f"(goal < 10%); orchestration outside the steps {(engine - steps) / engine * 100:.1f}% of wall")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--parallelism", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-store", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="runs per mode in (c); medians are reported")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kai-bench-engine-"))
    try:
        with EmbeddedSeaweedFS(work / "seaweed") as server:
            store = server.store(warm_up=True)  # as the engine's embedded store starts
            print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
            bench_fanout(store, args.tasks, args.parallelism, work)
            if not args.skip_store:
                bench_store()
            if not args.skip_quality:
                bench_quality(store, work, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
