"""A batch of new learners at --jobs 1 and at --jobs 4, timed side by side.

Each batch gets fresh random emails, so every line makes a learner, and the two
settings take turns when there are several rounds, so machine noise hits both
alike. The learners the bench made are removed afterwards, one
'platformctl remove user ALIAS --yes' each, even after a failure or Ctrl-C.

Run it against a site of its own, never one with real learners:

    .venv/bin/python bench/batch.py --config /tmp/benchbatch/config.toml
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

SETTINGS = (1, 4)


def platformctl(config: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "platformctl", "--config", config, *args]


def timed_batch(config: str, size: int, jobs: int, made: list[str]) -> float:
    """Seconds that a batch of size new learners takes; their aliases join made."""
    emails = "".join(
        f"bench.{uuid.uuid4().hex[:12]}@example.org\n" for _ in range(size)
    )
    command = platformctl(
        config, "add", "users", "--from", "-", "--jobs", str(jobs), "--json"
    )
    start = time.perf_counter()
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = child.communicate(emails)
    except KeyboardInterrupt:
        # Ctrl-C reached the batch too: it finishes the learners under way and
        # reports them, and the bench removes them.
        stdout, stderr = child.communicate()
        _note(made, stdout)
        raise
    elapsed = time.perf_counter() - start

    summary = _note(made, stdout)
    if summary is None:
        raise SystemExit(f"the batch failed ({child.returncode}): {stderr.strip()}")
    if summary["created"] != size:
        print(f"warning: --jobs {jobs} made {summary['created']} of {size}: {summary}")
    return elapsed


def _note(made: list[str], stdout: str) -> dict[str, Any] | None:
    """Add the aliases of a batch's --json report to made; its summary."""
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    made.extend(item["alias"] for item in report.get("created", []))
    summary: dict[str, Any] | None = report.get("summary")
    return summary


def remove(config: str, aliases: list[str]) -> list[str]:
    """Remove each learner, four at a time; the aliases that could not go."""

    def one(alias: str) -> str | None:
        command = platformctl(config, "remove", "user", alias, "--yes")
        done = subprocess.run(command, capture_output=True, text=True)
        return None if done.returncode == 0 else alias

    with ThreadPoolExecutor(4) as pool:
        return [alias for alias in pool.map(one, aliases) if alias is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="config of a throwaway site")
    parser.add_argument("--size", type=int, default=30, help="learners per batch")
    parser.add_argument("--rounds", type=int, default=1, help="batches per setting")
    given = parser.parse_args()

    times: dict[int, list[float]] = {jobs: [] for jobs in SETTINGS}
    made: list[str] = []
    try:
        for _ in range(given.rounds):
            for jobs in SETTINGS:
                times[jobs].append(timed_batch(given.config, given.size, jobs, made))
    finally:
        left = remove(given.config, made)
        print(f"removed {len(made) - len(left)} learners made by the bench")
        if left:
            print(f"could not remove: {' '.join(left)}", file=sys.stderr)

    for jobs in SETTINGS:
        median = statistics.median(times[jobs])
        print(
            f"{given.size} learners, --jobs {jobs}: {median:6.1f} s"
            f" ({median / given.size:.2f} s per learner, median of {given.rounds})"
        )
    one, four = (statistics.median(times[jobs]) for jobs in SETTINGS)
    print(f"ratio --jobs 1 / --jobs 4: {one / four:.2f}")


if __name__ == "__main__":
    main()
