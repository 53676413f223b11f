"""Shared parts of the benchmark scripts: machine facts, timing, tables and the BENCHMARKS.md record.

Every script in this folder compares its contenders in one invocation, on
the same inputs, in alternating rounds (A B A B ...). It prints a table of
medians and ratios and appends a dated record to ``BENCHMARKS.md`` at the
repository root, unless run with ``--no-record``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_DIR = ROOT / "benchmarks"
RECORDS_PATH = ROOT / "BENCHMARKS.md"
# Scratch files shared by runs of the scripts (the Landsat COG, the MapProxy
# virtualenv); the folder is ignored by git.
CACHE_DIR = BENCHMARKS_DIR / ".cache"
SAMPLE_DATA_ENV = "CACHECAMPAIGN_SAMPLE_DATA"

# Packages whose versions every record lists; missing ones are left out.
KEY_PACKAGES = (
    "Django", "celery", "kombu", "requests", "urllib3", "numpy", "pillow", "rasterio", "rio-tiler", "mercantile",
)

RECORDS_INTRO = """\
# Benchmarks

Each script in `benchmarks/` compares cachecampaign with another tool, or
with a lower bound, on the same inputs in one invocation. The contenders run
in alternating rounds (A B A B ...), so that a change in machine load hits
both, and the tables show medians over the rounds and the ratios between
contenders. Every run appends a record below with the date, the git commit
(`+dirty` when the work tree had uncommitted changes), the machine, the
package versions and the command.

Run them all with `make bench` (it installs what the scripts need), or one
with `.venv/bin/python benchmarks/bench_NAME.py`; `--help` lists each
script's options, and `--no-record` skips writing to this file. Set
`CACHECAMPAIGN_SAMPLE_DATA` to a folder with `landsat/` and `points/` to use
the local copy of the real inputs; otherwise each script prints what it
used instead.

Numbers are only comparable between records taken on the same machine, and
other load on that machine changes them. The upstream benchmark therefore
reports the cores that other processes kept busy during each contender's
rounds, and the raster benchmark reports tiles per CPU-second of its own
process next to wall-clock tiles per second.

## Records
"""


# --- Machine facts -----------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def package_versions(names: Sequence[str] = KEY_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str:
    """Return the short commit of the work tree, with ``+dirty`` when it has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if status else commit


@dataclass
class MachineFacts:
    cpu: str
    cores: int
    memory_gib: float | None
    os: str
    python: str
    packages: dict[str, str]

    def lines(self) -> list[str]:
        memory = f"{self.memory_gib:.1f} GiB" if self.memory_gib else "unknown"
        packages = ", ".join(f"{name} {version}" for name, version in self.packages.items())
        return [
            f"- CPU: {self.cpu}, {self.cores} cores",
            f"- RAM: {memory}",
            f"- OS: {self.os}",
            f"- Python: {self.python}",
            f"- packages: {packages}",
        ]


def machine_facts(extra_packages: dict[str, str] | None = None) -> MachineFacts:
    """Collect the facts a record needs; ``extra_packages`` adds versions found elsewhere (another venv)."""
    packages = package_versions()
    packages.update(extra_packages or {})
    return MachineFacts(
        cpu=cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gib=memory_gib(),
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        packages=packages,
    )


# --- Timing ------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """Return the CPU time all cores have spent busy since boot, in seconds (Linux /proc/stat), or NaN elsewhere.

    The difference of two calls is the machine's CPU time over the interval,
    including processes that the benchmark did not start.
    """
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return float("nan")
    # user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    ticks = [int(value) for value in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _process_stats() -> Iterator[tuple[int, str, list[str]]]:
    """Yield the pid, command name and the fields after the name of every live process's /proc stat line."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        # The command name, in brackets, may contain spaces; the fields after it are fixed.
        name_end = text.rindex(")")
        yield int(entry), text[text.index("(") + 1:name_end], text[name_end + 2:].split()


def process_tree_cpu_seconds(root_pid: int) -> float:
    """Return the CPU time (user + system) of a process and all its live descendants, in seconds (Linux /proc).

    Children that already ended count only once their parent has waited for
    them, as the kernel adds them to the parent's own counters then.
    """
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    for pid, _name, fields in _process_stats():
        parents[pid] = int(fields[1])
        # utime, stime, cutime, cstime are fields 14 to 17 of the full line.
        times[pid] = sum(int(value) for value in fields[11:15]) / ticks_per_second
    tree = {root_pid}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(times.get(pid, 0.0) for pid in tree)


def processes_cpu_seconds(names: Sequence[str]) -> float:
    """Return the CPU time (user + system) of every live process whose command name is one of ``names``, in seconds."""
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    # utime and stime are fields 14 and 15 of the full line.
    return sum(
        sum(int(value) for value in fields[11:13]) / ticks_per_second
        for _pid, name, fields in _process_stats()
        if name in names
    )


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("Cannot take the median of no values; run at least one round.")
    return statistics.median(values)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


@dataclass
class Contender:
    """One side of a comparison: a label and a function that runs one round and returns its measurements."""

    label: str
    run_round: Callable[[int], dict[str, float]]
    rounds: list[dict[str, float]] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return [measurement[metric] for measurement in self.rounds]

    def median(self, metric: str) -> float:
        return median(self.values(metric))


def run_alternating(
    contenders: Sequence[Contender],
    rounds: int,
    *,
    time_limit: float | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Run ``rounds`` rounds of every contender in turn (A B A B ...), storing each round's measurements.

    With ``time_limit`` (seconds), no new round of the contenders starts
    once the limit is reached, so a slow machine stops with fewer rounds.
    The first round of every contender always runs.
    """
    if rounds < 1:
        raise ValueError(f"Invalid rounds {rounds}; use 1 or more.")
    started = time.monotonic()
    for number in range(1, rounds + 1):
        if number > 1 and time_limit is not None and time.monotonic() - started > time_limit:
            log(f"Stopping after {number - 1} rounds: the {time_limit:.0f} s time limit was reached.")
            return
        for contender in contenders:
            measurement = contender.run_round(number)
            contender.rounds.append(measurement)
            summary = ", ".join(f"{key} {value:.4g}" for key, value in measurement.items())
            log(f"round {number} {contender.label}: {summary}")


# --- Output ------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as a Markdown table, with numbers right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(header)), *(len(row[index]) for row in cells)) for index, header in enumerate(headers)]
    numeric = [all(_is_number(row[index]) for row in rows) if rows else False for index in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.rjust(widths[index]) if numeric[index] else value.ljust(widths[index])
            for index, value in enumerate(values)
        ]
        return "| " + " | ".join(padded) + " |"

    separator = "| " + " | ".join(
        ("-" * (widths[index] - 1) + ":") if numeric[index] else "-" * widths[index] for index in range(len(headers))
    ) + " |"
    return "\n".join([line([str(header) for header in headers]), separator, *(line(row) for row in cells)])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def command_line() -> str:
    """Return the command that started this script, relative to the repository root where possible."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_path = str(script.relative_to(ROOT))
    except ValueError:
        script_path = str(script)
    python = Path(sys.executable)
    try:
        interpreter = str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else python.name
    except ValueError:
        interpreter = python.name
    return shlex.join([interpreter, script_path, *sys.argv[1:]])


def append_record(title: str, body: str, *, extra_packages: dict[str, str] | None = None,
                  path: Path = RECORDS_PATH) -> None:
    """Append a dated record (title, commit, machine, command, then ``body``) to BENCHMARKS.md.

    The file is created with its introduction when it does not exist.
    """
    facts = machine_facts(extra_packages)
    # UTC, because Django's setup changes the process's local time zone to TIME_ZONE.
    now = dt.datetime.now(dt.timezone.utc)
    environment = f"{SAMPLE_DATA_ENV}=DIR " if os.environ.get(SAMPLE_DATA_ENV) else ""
    lines = [
        "",
        f"### {title}, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"- commit: {git_commit()}",
        *facts.lines(),
        f"- command: `{environment}{command_line()}`",
        "",
        body.rstrip(),
        "",
    ]
    if not path.exists():
        path.write_text(RECORDS_INTRO, encoding="utf-8")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines))


def add_common_arguments(parser: argparse.ArgumentParser, *, rounds: int) -> None:
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"rounds per contender, run alternately (default {rounds})")
    parser.add_argument("--no-record", action="store_true", help="print the results without appending to BENCHMARKS.md")


def sample_data_folder() -> Path | None:
    """Return the folder named by CACHECAMPAIGN_SAMPLE_DATA, or None when it is unset or missing."""
    value = os.environ.get(SAMPLE_DATA_ENV, "").strip()
    if not value:
        return None
    folder = Path(value)
    return folder if folder.is_dir() else None
