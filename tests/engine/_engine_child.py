"""Run one pipeline in a separate process (for the SIGINT / SIGKILL tests): ARGS = doc.json out cache [resume].
The store comes from KAI_S3_* in the environment. Exit 0 when the run Succeeded, 1 otherwise."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kai_flows.engine import run_pipeline

if __name__ == "__main__":
    doc, out, cache = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), Path(sys.argv[3])
    resume = sys.argv[4] if len(sys.argv) > 4 else None
    result = run_pipeline(doc, out=out, cache=cache, resume=resume, progress=True, parallelism=2)
    print(result.name, result.phase, flush=True)
    sys.exit(0 if result.succeeded else 1)
