"""The README's test figures, measured and written in (never typed by hand, so never stale).

    make test-figures     (or: python -m bench.readme_figures [--no-write])

Runs what ``make test`` runs after its installs (ruff, mypy, then the whole pytest suite), times each
part with a wall clock, reads the counts from pytest's own closing line, and rewrites the block
between the ``test-figures`` markers in README.md with them, the date and the machine's core count.
``cfn-lint``/``sam validate`` are left out: they need the SAM CLI's own virtualenv.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START = "<!-- test-figures:start (written by `make test-figures`; do not edit) -->"
END = "<!-- test-figures:end -->"
#: pytest's closing line, e.g. "512 passed, 3 skipped in 201.33s (0:03:21)" (with -q: no "=" around it).
SUMMARY = re.compile(r"^=*\s*(?P<counts>\d+ (?:passed|failed|skipped|error).*?) in (?P<seconds>[\d.]+)s")


def timed(args: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return elapsed, done.stdout


def measure() -> str:
    bin_dir = Path(sys.executable).parent
    lint = sum(
        timed(args)[0]
        for args in (
            [str(bin_dir / "ruff"), "check", "."],
            [str(bin_dir / "ruff"), "format", "--check", "."],
            [str(bin_dir / "mypy")],
        )
    )
    total, out = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
    lines = [m for m in (SUMMARY.match(line) for line in out.splitlines()) if m]
    if not lines:
        sys.exit(f"no pytest summary line in the output:\n{out[-2000:]}")
    counts, pytest_seconds = lines[-1]["counts"], float(lines[-1]["seconds"])
    day = datetime.now(UTC).date().isoformat()
    return "\n".join(
        [
            START,
            "| Part of `make test` | Time |",
            "|---|---|",
            f"| lint and type checks (ruff, mypy) | {lint:.0f} s |",
            f"| the tests: {counts} | {pytest_seconds:.0f} s of pytest ({total:.0f} s with its start-up) |",
            "",
            f"(Measured on {day} on a {os.cpu_count()}-core machine by `make test-figures`, which runs them and "
            "writes this table; a machine shared with other work is slower.)",
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print the block, leave README.md alone")
    args = parser.parse_args()
    block = measure()
    print(block)
    if args.no_write:
        return
    text = README.read_text(encoding="utf-8")
    start, end = text.index(START), text.index(END) + len(END)
    README.write_text(text[:start] + block + text[end:], encoding="utf-8")
    print(f"wrote {README.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
