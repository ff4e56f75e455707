"""Cold start: how long importing each Lambda handler module takes, as a ratio to ``import boto3``.

    make coldstart        (or: python -m bench.coldstart [--runs N])

Each figure is the median of N fresh interpreters (``-X importtime`` is not used: it slows imports
down unevenly). Absolute times depend on the machine, so each handler is reported as a ratio to
``import boto3`` measured in the same run, the way Lambda would pay for both. Bytecode is in place
(a warm-up import writes the ``.pyc`` of the core first, as the layer build does for python3.13), so
the figures measure importing, not compiling. Prints; asserts nothing.

Targets (issue 8): agent handlers <= 1.2x, API handlers <= 2x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (label, the handler's folder under functions/, its module, the target ratio or None)
HANDLERS: list[tuple[str, str, str, float | None]] = [
    ("agent (retriever)", "agents", "retriever", 1.2),
    ("agent (analyzer)", "agents", "analyzer", 1.2),
    ("agent (writer)", "agents", "writer", 1.2),
    ("finalize", "finalize", "handler", 1.2),
    ("API (create, query)", "api", "app", 2.0),
    ("S3 trigger", "triggers", "s3_handler", None),
    ("SQS trigger", "triggers", "sqs_handler", None),
    ("stream app (uvicorn's import)", "stream", "app", None),
]

_TIMED = """
import sys, time
sys.path.insert(0, {path!r})
start = time.perf_counter()
import {module}
print(time.perf_counter() - start)
"""

_ENV = {
    "STORE": "dynamodb",
    "TABLE_NAME": "agentic-coldstart",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "agentic",
    "POWERTOOLS_METRICS_NAMESPACE": "Agentic",
    # As template.yaml's Globals set it: no pydantic plugins, so no entry-point scan at the first model.
    "PYDANTIC_DISABLE_PLUGINS": "__all__",
}


def timed_import(module: str, path: str = "") -> float:
    env = {**os.environ, **_ENV, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _TIMED.format(path=path, module=module)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    ).stdout
    return float(out.strip().splitlines()[-1])


def warm_up() -> None:
    """Write the .pyc of every module the handlers import (the layer ships them)."""
    env = {**os.environ, **_ENV}
    for _, folder, module, _ in HANDLERS:
        code = f"import sys; sys.path.insert(0, {str(ROOT / 'functions' / folder)!r}); import {module}"
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            cwd=ROOT,
            env=env,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    warm_up()
    # Round robin (boto3, then each handler, N times over), so that a change in the machine's load
    # during the run weighs on every figure alike.
    times: dict[str, list[float]] = {"boto3": []}
    for _ in range(args.runs):
        times["boto3"].append(timed_import("boto3"))
        for label, folder, module, _target in HANDLERS:
            times.setdefault(label, []).append(timed_import(module, str(ROOT / "functions" / folder)))
    baseline = statistics.median(times["boto3"])
    print(f"Python {sys.version.split()[0]}, {args.runs} fresh interpreters per figure (median)")
    print(f"{'import boto3':32s} {baseline * 1000:7.0f} ms   1.00x")
    for label, _folder, _module, target in HANDLERS:
        median = statistics.median(times[label])
        ratio = median / baseline
        goal = f"(target <= {target:.1f}x)" if target is not None else ""
        print(f"{label:32s} {median * 1000:7.0f} ms   {ratio:.2f}x  {goal}")


if __name__ == "__main__":
    main()
