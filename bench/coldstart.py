"""Cold start: how long importing each Lambda handler module takes, and importing it plus its first
invocation, as ratios to ``import boto3``.

    make coldstart        (or: python -m bench.coldstart [--runs N] [--compare OTHER_TREE])

Two columns per handler, each the median of N fresh interpreters (``-X importtime`` is not used: it
slows imports down unevenly), measured round robin (boto3, then each handler, N times over; with
``--compare``, the two checkouts alternate figure by figure) so that a change in the machine's load
weighs on every figure alike. Both count the CPU time of the function's interpreter (on a machine
shared with other work, wall time mostly measures the wait for a core), as a ratio to the CPU time
of ``import boto3`` in a fresh interpreter:

- **import**: ``import <handler module>``;
- **import + first call**: that import plus one invocation of the handler with its ``events/`` file,
  so what a deferred import costs the first request counts too. The handler calls AWS through
  ``AWS_ENDPOINT_URL`` on a loopback stand-in served by moto in this process
  (``bench/coldstart_aws.py``): the function's interpreter imports boto3 and builds its clients as in
  Lambda, and its CPU time leaves out moto's own work.

Bytecode is in place (a warm-up import writes the ``.pyc`` of the core first, as the layer build does
for python3.13), so the figures measure importing, not compiling. ``--compare DIR`` measures another
checkout of the project (e.g. ``git archive main | tar -x -C /tmp/main``) in the same rounds, as
another pair of columns (repeat it for more). Prints; asserts nothing.

Targets (issue 17): agent handlers <= 1.2x, API handlers <= 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
#: The environment the measured interpreters start from (the stand-in changes this process's own).
BASE_ENV = dict(os.environ)


@dataclass(frozen=True)
class Handler:
    label: str
    folder: str  #: under functions/
    module: str
    target: float | None
    #: the first call: the handler attribute, its events/ file, the state it expects, what it answers
    attribute: str = "handler"
    event: str | None = None
    prepare: str = "nothing"
    expect: str = ""


HANDLERS: list[Handler] = [
    Handler("agent (retriever)", "agents", "retriever", 1.2, event="retriever_step.json", prepare="planned",
            expect='"status": "completed"'),
    Handler("agent (analyzer)", "agents", "analyzer", 1.2, event="analyzer_plan.json", prepare="created",
            expect='"status": "executing"'),
    Handler("agent (writer)", "agents", "writer", 1.2, event="writer_step.json", prepare="after two steps",
            expect='"status": "completed"'),
    Handler("finalize", "finalize", "handler", 1.2, event="finalize_fail.json", prepare="planned",
            expect='"status": "failed"'),
    Handler("API (create)", "api", "app", 2.0, attribute="create_handler", event="create_task_post.json",
            expect='"statusCode": 201'),
    Handler("API (query)", "api", "app", 2.0, attribute="query_handler", event="query_tasks_status.json",
            prepare="created", expect='"statusCode": 200'),
    Handler("API lean (create)", "api", "lean", 2.0, attribute="create_handler", event="create_task_post.json",
            expect='"statusCode": 201'),
    Handler("API lean (query)", "api", "lean", 2.0, attribute="query_handler", event="query_tasks_status.json",
            prepare="created", expect='"statusCode": 200'),
    Handler("S3 trigger", "triggers", "s3_handler", None),
    Handler("SQS trigger", "triggers", "sqs_handler", None),
    Handler("stream app (uvicorn's import)", "stream", "app", None),
]  # fmt: skip

_TIMED = """
import sys, time
sys.path.insert(0, {path!r})
cpu = time.process_time()
import {module}
print("COLDSTART", time.process_time() - cpu)
"""

_FIRST_CALL = """
import sys, time
sys.path.insert(0, {path!r})
with open({event!r}) as file:
    text = file.read()
class Context:
    function_name = "coldstart"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:coldstart"
    def get_remaining_time_in_millis(self):
        return 30000
cpu = time.process_time()
import {module}
import json
answer = {module}.{attribute}(json.loads(text), Context())
cpu = time.process_time() - cpu
print("COLDSTART", cpu, json.dumps(answer)[:300])
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


#: ``--instructions``: run each interpreter under valgrind's cachegrind, which counts the instructions
#: it executes (the same count on a busy machine as on an idle one, about 30 times slower).
COUNTER = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _run(
    code: str, tree: Path, extra_env: dict[str, str] | None = None, *, write_bytecode: bool = False, count: bool = False
) -> tuple[str, int]:
    """The interpreter's COLDSTART line, and with ``count`` the instructions it executed (else 0)."""
    env = {**BASE_ENV, **_ENV, **(extra_env or {})}
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = str(tree / "layers" / "core")  # that checkout's core, whatever the venv installed
    if count:
        env["PYTHONHASHSEED"] = "0"  # the same dict and set layouts in every run: the same count
    out = subprocess.run(
        [*(COUNTER if count else []), sys.executable, "-c", code], capture_output=True, text=True, cwd=tree, env=env
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"failed in {tree}:\n{out.stderr[-3000:]}")
    lines = [line for line in out.stdout.splitlines() if line.startswith("COLDSTART ")]
    refs = _REFS.search(out.stderr) if count else None
    return lines[-1].removeprefix("COLDSTART "), int(refs.group(1).replace(",", "")) if refs else 0


class Measure:
    """CPU seconds, or with ``count`` instructions beyond an empty interpreter's."""

    def __init__(self, count: bool) -> None:
        self.count = count
        self._startup: dict[Path, int] = {}

    def _value(self, line: str, refs: int, tree: Path) -> float:
        if not self.count:
            return float(line.split(" ", 1)[0])
        if tree not in self._startup:
            self._startup[tree] = _run("print('COLDSTART 0')", tree, count=True)[1]
        return float(refs - self._startup[tree])

    def timed_import(self, module: str, tree: Path, path: str = "") -> float:
        """``import module``."""
        line, refs = _run(_TIMED.format(path=path, module=module), tree, count=self.count)
        return self._value(line, refs, tree)

    def first_call(self, handler: Handler, tree: Path, aws: object) -> float:
        """Importing ``handler`` and invoking it once with its events/ file."""
        assert handler.event is not None
        aws.prepare(handler.prepare)  # type: ignore[attr-defined]
        code = _FIRST_CALL.format(
            path=str(tree / "functions" / handler.folder),
            event=str(EVENTS / handler.event),
            module=handler.module,
            attribute=handler.attribute,
        )
        line, refs = _run(code, tree, aws.env, count=self.count)  # type: ignore[attr-defined]
        answer = line.split(" ", 1)[1]
        if handler.expect not in answer:
            raise RuntimeError(f"{handler.label} answered {answer} (expected {handler.expect})")
        return self._value(line, refs, tree)


def warm_up(tree: Path) -> None:
    """Write the .pyc of every module the handlers import (the layer ships them)."""
    for handler in HANDLERS:
        path = str(tree / "functions" / handler.folder)
        code = f"import sys; sys.path.insert(0, {path!r}); import {handler.module}; print('COLDSTART ok')"
        _run(code, tree, write_bytecode=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--compare", type=Path, action="append", default=[], help="another checkout, measured alongside (repeatable)"
    )
    parser.add_argument("--no-first-call", action="store_true", help="the import column only")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under valgrind instead of CPU time (slow)"
    )
    parser.add_argument("--save", type=Path, help="write every sample to this JSON file")
    parser.add_argument(
        "--best", action="store_true", help="the fastest of the N runs instead of the median (a busy machine)"
    )
    args = parser.parse_args()
    stat = min if args.best else statistics.median
    measure = Measure(count=args.instructions)
    trees = [ROOT] + [tree.resolve() for tree in args.compare]
    for tree in trees:
        warm_up(tree)
    aws = None
    if not args.no_first_call:
        from bench.coldstart_aws import FakeAws

        aws = FakeAws()
    imports: dict[tuple[Path, str], list[float]] = {}
    calls: dict[tuple[Path, str], list[float]] = {}
    boto3_cpu: list[float] = []  # the same venv's boto3 for every checkout: one baseline
    try:
        for _ in range(args.runs):
            for tree in trees:
                boto3_cpu.append(measure.timed_import("boto3", tree))
            for handler in HANDLERS:
                for tree in trees:  # the checkouts alternate figure by figure
                    folder = str(tree / "functions" / handler.folder)
                    imports.setdefault((tree, handler.label), []).append(
                        measure.timed_import(handler.module, tree, folder)
                    )
                    if aws is not None and handler.event is not None:
                        calls.setdefault((tree, handler.label), []).append(measure.first_call(handler, tree, aws))
    finally:
        if aws is not None:
            aws.close()
    if args.save:
        samples = {
            "boto3": boto3_cpu,
            "import": {f"{tree}|{label}": values for (tree, label), values in imports.items()},
            "import + first call": {f"{tree}|{label}": values for (tree, label), values in calls.items()},
        }
        args.save.write_text(json.dumps(samples, indent=1))
    which = "fastest" if args.best else "median"
    unit, scale = ("M instructions", 1e-6) if args.instructions else ("ms of CPU", 1000.0)
    print(f"Python {sys.version.split()[0]}, {args.runs} fresh interpreters per figure ({which}), {unit}")
    header = f"{'':30s}"
    for tree in trees:
        name = "" if len(trees) == 1 else f" [{tree.name}]"
        header += f" {'import' + name:>22s} {'import + first call' + name:>26s}"
    print(header + "   target")
    baseline = stat(boto3_cpu)
    print(f"{'import boto3':30s} {baseline * scale:16.0f} 1.00x")
    for handler in HANDLERS:
        row = f"{handler.label:30s}"
        for tree in trees:
            figure = stat(imports[(tree, handler.label)])
            row += f" {figure * scale:16.0f} {figure / baseline:4.2f}x"
            if (tree, handler.label) in calls:
                figure = stat(calls[(tree, handler.label)])
                row += f" {figure * scale:20.0f} {figure / baseline:4.2f}x"
            else:
                row += f" {'-':>26s}"
        print(row + (f"   <= {handler.target:.1f}x" if handler.target is not None else ""))


if __name__ == "__main__":
    main()
