"""Start-up of `platformctl --help` against a bare Click program, side by side.

Both run in turns in the same loop, so machine noise hits them alike; the ratio
of medians is what to watch. Also prints peak memory of each, and what
`platformctl --help` imports beyond Click (heavy libraries must not show up).

Run: make bench
"""

import os
import statistics
import subprocess
import sys
import time

ROUNDS = 30
BARE_CLICK = """
import click

@click.group()
def cli():
    "A bare Click program."

@cli.command()
def hello():
    "Say hello."

cli()
"""
HEAVY = ("docker", "requests", "psycopg2", "passlib", "coolname", "email_validator")


def timed(command: list[str]) -> tuple[float, int]:
    """Wall time in seconds and the process's peak memory in KiB."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{command} failed with exit code {child.returncode}")
    return elapsed, usage.ru_maxrss


def main() -> None:
    commands = {
        "bare click --help": [sys.executable, "-c", BARE_CLICK, "--help"],
        "platformctl --help": [sys.executable, "-m", "platformctl", "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    peaks: dict[str, list[int]] = {name: [] for name in commands}
    for command in commands.values():
        timed(command)  # warm the file cache
    for _ in range(ROUNDS):
        for name, command in commands.items():
            elapsed, peak = timed(command)
            times[name].append(elapsed)
            peaks[name].append(peak)

    for name in commands:
        median = statistics.median(times[name])
        memory = statistics.median(peaks[name]) / 1024
        print(
            f"{name:22} median {median * 1000:6.1f} ms, peak memory"
            f" {memory:5.1f} MiB over {ROUNDS} runs"
        )
    bare, ours = (statistics.median(times[name]) for name in commands)
    bare_memory, our_memory = (statistics.median(peaks[name]) for name in commands)
    print(
        f"ratio platformctl / bare click: time {ours / bare:.2f},"
        f" memory {our_memory / bare_memory:.2f}"
    )

    imported = (
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, runpy; sys.argv = ['platformctl', '--help'];"
                "import platformctl.cli as c\n"
                "try:\n c.cli.main(standalone_mode=False)\nexcept SystemExit: pass\n"
                f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    print(f"heavy libraries imported by --help: {imported}")


if __name__ == "__main__":
    main()
