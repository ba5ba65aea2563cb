"""Adding many learners from one list, a few at a time.

The list is read and checked first: blank lines and comments are skipped, a line
that holds no email address becomes an 'invalid' outcome and nothing more. The
good lines go to a pool of worker threads. Each worker has a Platform of its own,
because neither a psycopg2 connection nor a Docker client may be shared between
threads. Two lines for the same learner are safe: add_learner holds a PostgreSQL
advisory lock per learner, so the later one finds the learner made and changes
nothing.

The caller hears about each line in its own thread as soon as the line is done,
and may ask the batch to stop at any time: no new learner is started, and those
under way finish, or undo their own partial work, before add_learners returns.

Workers share one book of the host ports they chose for workspaces, so two of
them never race for the same port (see _WorkspaceWithPortBook).
"""

import csv
import io
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from platformctl import anonymizer
from platformctl.config import Config
from platformctl.errors import InputError, PlatformError
from platformctl.learners import AddResult, Platform, add_learner, open_platform

log = logging.getLogger(__name__)

CREATED = "created"
EXISTING = "existing"
INVALID = "invalid"
FAILED = "failed"
KINDS = (CREATED, EXISTING, INVALID, FAILED)

# How often the waiting thread looks at the stop request while workers run.
POLL_SECONDS = 0.1

# How often to list the containers again when one vanished while listing them.

# Delimiters tried on a CSV header row; spreadsheets in many languages save ';'.
DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class Entry:
    """One input line that needs work: an email, or why it is not one.

    The email is held only in memory, for as long as the batch runs.
    """

    line: int
    email: str | None = field(default=None, repr=False)
    error: str | None = None
    same_as: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one input line. It never holds the email."""

    line: int
    kind: str
    result: AddResult | None = None
    error: str | None = None
    same_as: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The outcome as plain data, for --json."""
        data: dict[str, Any] = {"line": self.line}
        if self.result is not None:
            data.update(self.result.as_dict())
        if self.error is not None:
            data["error"] = self.error
        if self.same_as is not None:
            data["same_as"] = self.same_as
        return data


@dataclass
class Report:
    """Every outcome of a batch, and how many lines it never started."""

    outcomes: list[Outcome] = field(default_factory=list)
    not_started: int = 0
    interrupted: bool = False

    def of_kind(self, kind: str) -> list[Outcome]:
        """The outcomes of one kind, in input order."""
        return sorted(
            (outcome for outcome in self.outcomes if outcome.kind == kind),
            key=lambda outcome: outcome.line,
        )

    def counts(self) -> dict[str, int]:
        """How many lines ended in each kind of outcome."""
        counts = {kind: len(self.of_kind(kind)) for kind in KINDS}
        counts["not_started"] = self.not_started
        return counts

    @property
    def ok(self) -> bool:
        """Whether every line was a learner that now exists."""
        return not (self.of_kind(INVALID) or self.of_kind(FAILED) or self.not_started)


def read_entries(text: str, column: str | None, source: str) -> list[Entry]:
    """The lines of text that need work, each checked as an email.

    Without a column, each line is one email. With one, text is CSV whose header
    row names that column. Blank lines and lines starting with '#' are skipped.
    Raises InputError when the column is not in the header.
    """
    if column is None:
        cells = _plain_cells(text)
    else:
        cells = _csv_cells(text, column, source)

    entries = []
    first_line: dict[str, int] = {}
    for line, cell in cells:
        if not cell.strip():
            entries.append(Entry(line, error=f"the '{column}' column is empty"))
            continue
        try:
            email = anonymizer.normalize_email(cell)
        except InputError as exc:
            entries.append(Entry(line, error=exc.message))
            continue
        entries.append(Entry(line, email=email, same_as=first_line.get(email)))
        first_line.setdefault(email, line)
    return entries


def _lines(text: str) -> list[str]:
    # Universal newlines with their endings kept: what csv needs, and the line
    # numbers an editor shows.
    return io.StringIO(text, newline="").readlines()


def _plain_cells(text: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(_lines(text), start=1):
        if _skipped(raw):
            continue
        yield number, raw


def _csv_cells(text: str, column: str, source: str) -> Iterator[tuple[int, str]]:
    lines = _lines(text)
    header_at = next((i for i, raw in enumerate(lines) if not _skipped(raw)), None)
    if header_at is None:
        raise InputError(
            f"no column '{column}' in '{source}': it has no header row",
            "the first line that is not blank or a comment must name the columns",
        )

    delimiter = max(DELIMITERS, key=lines[header_at].count)
    reader = csv.reader(io.StringIO("".join(lines[header_at:])), delimiter=delimiter)
    header = [name.strip() for name in next(reader)]
    index = _column_index(header, column, source)
    # csv counts the lines it has read, including those inside quoted cells; a
    # record starts on the line after the previous one ended.
    ended = reader.line_num
    for row in reader:
        start, ended = header_at + ended + 1, reader.line_num
        if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        yield start, row[index] if index < len(row) else ""


def _column_index(header: list[str], column: str, source: str) -> int:
    wanted = column.strip()
    if wanted in header:
        return header.index(wanted)
    folded = [name.casefold() for name in header]
    if wanted.casefold() in folded:
        return folded.index(wanted.casefold())

    shown = ", ".join(f"'{name}'" for name in header if name) or "none"
    raise InputError(f"no column '{column}' in '{source}'", f"its header names {shown}")


def _skipped(raw: str) -> bool:
    text = raw.strip()
    return not text or text.startswith("#")


def check_services(config: Config) -> None:
    """Raise unless the site key is readable and every enabled service answers.

    Done once before a batch, so a service that is down stops the batch with one
    error instead of failing every line with the same one.
    """
    anonymizer.load_secret(config.secret_path)
    with open_platform(config) as platform:
        for provisioner in platform.provisioners():
            provisioner.check()


def add_learners(
    config: Config,
    entries: list[Entry],
    jobs: int,
    report: Callable[[Outcome], None],
    stop: threading.Event,
) -> Report:
    """Add the learner of every entry, jobs (1 or more) at a time.

    report is called in this thread with each outcome: the invalid entries first,
    then each learner as it is done. Once stop is set no new learner is started;
    the call returns when those under way are done. A failure fails its own line
    only.
    """
    done = Report()

    def record(outcome: Outcome) -> None:
        done.outcomes.append(outcome)
        report(outcome)

    waiting = []
    for entry in entries:
        if entry.email is None:
            record(Outcome(entry.line, INVALID, error=entry.error))
        else:
            waiting.append(entry)
    waiting.reverse()

    workers = _Workers(config)
    under_way: dict[Future[Outcome], Entry] = {}
    try:
        with ThreadPoolExecutor(jobs, thread_name_prefix="learner") as pool:
            while waiting or under_way:
                while waiting and len(under_way) < jobs and not stop.is_set():
                    entry = waiting.pop()
                    under_way[pool.submit(workers.add, entry)] = entry
                if not under_way:
                    break
                finished, _ = wait(
                    under_way, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED
                )
                for future in sorted(finished, key=lambda f: under_way[f].line):
                    del under_way[future]
                    record(future.result())
    finally:
        workers.close()

    done.not_started = len(waiting)
    done.interrupted = stop.is_set()
    if done.not_started:
        log.info("batch stopped with %d lines not started", done.not_started)
    return done


class _Workers:
    """The work of one line, on a Platform owned by the worker thread."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.local = threading.local()
        self.lock = threading.Lock()
        self.opened: list[Platform] = []

    def add(self, entry: Entry) -> Outcome:
        """Add the entry's learner; any failure becomes a 'failed' outcome."""
        assert entry.email is not None
        log.debug("line %d: starting", entry.line)
        try:
            result = add_learner(self._platform(), entry.email)
        except PlatformError as exc:
            log.debug("line %d failed", entry.line, exc_info=True)
            self._forget_platform()
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            return Outcome(entry.line, FAILED, error=first_line)
        except Exception as exc:  # a bug fails its line, and shows with --debug
            log.debug("line %d failed unexpectedly", entry.line, exc_info=True)
            self._forget_platform()
            return Outcome(
                entry.line,
                FAILED,
                error=f"unexpected {type(exc).__name__}: {exc}; run again with"
                " --debug and report the traceback",
            )

        kind = CREATED if result.created else EXISTING
        return Outcome(entry.line, kind, result=result, same_as=entry.same_as)

    def close(self) -> None:
        """Close every worker's Platform; the workers must have stopped."""
        with self.lock:
            for platform in self.opened:
                platform.close()
            self.opened.clear()

    def _platform(self) -> Platform:
        platform: Platform | None = getattr(self.local, "platform", None)
        if platform is None:
            platform = Platform(self.config)
            self.local.platform = platform
            with self.lock:
                self.opened.append(platform)
        return platform

    def _forget_platform(self) -> None:
        # After a failure the connections may be broken; the worker's next line
        # starts with fresh ones rather than failing for the same reason.
        platform: Platform | None = getattr(self.local, "platform", None)
        if platform is None:
            return
        self.local.platform = None
        with self.lock:
            self.opened.remove(platform)
        platform.close()
