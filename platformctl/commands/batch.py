"""`platformctl add users`: many learners from a list of emails.

The work lives in platformctl.batch. This module reads the list, shows progress,
prints each line's outcome and a summary, writes the cards file, and turns Ctrl-C
into a request to stop that lets the learners under way finish or undo their
work. Emails are never printed, except the text of a line that is not one.
"""

import contextlib
import csv
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import click

from platformctl.cli import add, json_option, options, print_json
from platformctl.errors import InputError

if TYPE_CHECKING:
    from platformctl.batch import Outcome, Report

log = logging.getLogger(__name__)

MAX_JOBS = 16

# Each stops the batch gently: Ctrl-C, a service manager's stop, a closed
# terminal. The exit code is then 128 plus the signal's number, as a shell
# reports a program that the signal ended.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

BATCH_EXIT_CODES_HELP = (
    "Exit codes: 0 every line is a learner who exists now, 1 a line was invalid or"
    " failed (or a service is down), 2 bad usage (no such file or column),"
    " 130 stopped by Ctrl-C (129 by a hang-up, 143 by SIGTERM)."
)

CARD_COLUMNS = (
    "line",
    "alias",
    "workspace_url",
    "workspace_password",
    "gitea_url",
    "gitea_user",
    "gitea_password",
    "postgres_database",
    "postgres_user",
    "postgres_password",
)

# The order in which a learner uses the passwords, most used first.
PASSWORD_ORDER = ("workspace", "gitea", "postgres")


@add.command("users", epilog=BATCH_EXIT_CODES_HELP)
@click.option(
    "--from",
    "source",
    required=True,
    metavar="FILE",
    help="One email per line; '-' reads standard input.",
)
@click.option(
    "--column",
    metavar="NAME",
    help="Read FILE as CSV and take the emails from the column NAME in its header row.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, MAX_JOBS),
    default=1,
    show_default=True,
    help="How many learners to make at the same time.",
)
@click.option(
    "--cards",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the new learners' cards, passwords included, to this new CSV"
    " file (mode 600) instead of printing the passwords.",
)
@json_option
def add_users(
    source: str, column: str | None, jobs: int, cards: Path | None, as_json: bool
) -> int:
    """Provision a learner for each email in FILE.

    Up to --jobs learners are made at the same time. Blank lines and lines
    starting with '#' are skipped. A line that is not an email is reported by
    its number and skipped; so is a learner that fails, after its partial work
    is undone. Each new learner's alias, workspace address and first passwords
    are shown once: on standard output, or in the --cards file. Ctrl-C starts
    no new learner, lets those under way finish and prints the summary.
    """
    from platformctl import batch

    text, source_name = _read_source(source)
    entries = batch.read_entries(text, column, source_name)

    config = options().load()
    if any(entry.email is not None for entry in entries):
        batch.check_services(config)

    cards_file = _create_cards_file(cards) if cards is not None else None
    # Log lines on standard error would tear a progress bar apart.
    quiet = logging.getLogger().getEffectiveLevel() > logging.INFO
    show_bar = sys.stdout.isatty() and quiet
    printer = _Printer(as_json, show_bar, cards, cards_file)
    stop = threading.Event()
    try:
        with _stop_on_signals(stop) as stopped_by, printer.progress(len(entries)):
            report = batch.add_learners(config, entries, jobs, printer, stop)
    finally:
        if cards_file is not None:
            cards_file.close()

    printer.finish(report)
    if report.interrupted:
        return 128 + (stopped_by[0] if stopped_by else signal.SIGINT)
    return 0 if report.ok else 1


def _read_source(source: str) -> tuple[str, str]:
    """The text of FILE, and its name for messages. Raises InputError."""
    if source == "-":
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        try:
            data = Path(source).expanduser().read_bytes()
        except OSError as exc:
            raise InputError(
                f"cannot read '{source}': {exc.strerror}", "check the file name"
            ) from None
        name = source
    # Bytes that are not UTF-8 can only spoil the cells they are in; an email
    # cell that holds one is then reported as not an email.
    return data.decode("utf-8-sig", errors="replace"), name


def _create_cards_file(path: Path) -> TextIO:
    """A new file for the cards, readable by its owner alone. Raises InputError."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(
            f"the cards file '{path}' exists already",
            "name a new one: it may hold the passwords of an earlier batch",
        ) from None
    except OSError as exc:
        raise InputError(f"cannot create '{path}': {exc.strerror}") from None

    handle = os.fdopen(descriptor, "w", newline="", encoding="utf-8")
    csv.writer(handle).writerow(CARD_COLUMNS)
    handle.flush()
    return handle


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """While the block runs, a stop signal sets stop instead of ending us.

    Yields a list that receives the number of the first signal. Learners under
    way are never cut short: that would leave their parts behind. A signal that
    is ignored (as nohup does for SIGHUP) stays ignored.
    """
    received: list[int] = []

    def request_stop(number: int, frame: FrameType | None) -> None:
        if received:
            message = "still waiting for the learners under way: they are not cut short"
        else:
            received.append(number)
            message = (
                "stopping: no new learners; those under way finish or undo their work"
            )
        stop.set()
        # Written straight to the descriptor: the interrupted code may be in the
        # middle of writing to sys.stderr, which is not reentrant.
        os.write(sys.stderr.fileno(), f"\nplatformctl: {message}\n".encode())

    previous = {}
    for number in STOP_SIGNALS:
        if signal.getsignal(number) is not signal.SIG_IGN:
            previous[number] = signal.signal(number, request_stop)
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class _Printer:
    """Shows each outcome as it comes and the summary at the end."""

    def __init__(
        self,
        as_json: bool,
        show_bar: bool,
        cards: Path | None,
        cards_file: TextIO | None,
    ) -> None:
        self.as_json = as_json
        self.show_bar = show_bar
        self.cards = cards
        self.cards_file = cards_file
        self.cards_writer = csv.writer(cards_file) if cards_file else None
        # Lines whose passwords went to standard output after all.
        self.shown_here: set[int] = set()
        self.bar: Any = None

    @contextlib.contextmanager
    def progress(self, length: int) -> Iterator[None]:
        """A progress bar on standard error while the block runs, if wanted."""
        if not self.show_bar or length == 0:
            yield
            return
        bar = click.progressbar(
            length=length, label="Adding learners", show_pos=True, file=sys.stderr
        )
        with bar:
            self.bar = bar
            try:
                yield
            finally:
                self.bar = None

    def __call__(self, outcome: "Outcome") -> None:
        from platformctl.batch import CREATED

        if outcome.kind == CREATED and self.cards_writer is not None:
            self._write_card(outcome)
        if self.bar is not None:
            self.bar.update(1)
        elif not self.as_json:
            click.echo(self._line(outcome))

    def finish(self, report: "Report") -> None:
        """Print what is still to print: the sorted lines, the summary."""
        from platformctl.batch import CREATED, KINDS

        if self.as_json:
            data: dict[str, Any] = {
                kind: [self._dict(outcome) for outcome in report.of_kind(kind)]
                for kind in KINDS
            }
            data["summary"] = {**report.counts(), "interrupted": report.interrupted}
            if self.cards is not None:
                data["cards"] = str(self.cards)
            print_json(data)
            return

        if self.show_bar:
            for outcome in sorted(report.outcomes, key=lambda o: o.line):
                click.echo(self._line(outcome))
        counts = report.counts()
        summary = (
            f"created {counts['created']}, already there {counts['existing']},"
            f" invalid {counts['invalid']}, failed {counts['failed']}"
        )
        if report.interrupted:
            summary += f"; interrupted, {counts['not_started']} lines not started"
        click.echo(summary)
        if report.of_kind(CREATED):
            if self.cards is None or self.shown_here:
                click.echo(
                    "These passwords are shown this once; platformctl keeps no copy."
                )
            if self.cards is not None:
                click.echo(f"The cards are in {self.cards} (readable by you alone).")

    def _hides_passwords(self, outcome: "Outcome") -> bool:
        return self.cards is not None and outcome.line not in self.shown_here

    def _line(self, outcome: "Outcome") -> str:
        from platformctl.batch import CREATED, FAILED, INVALID

        prefix = f"line {outcome.line}: "
        if outcome.kind == INVALID:
            return f"{prefix}{outcome.error}"
        if outcome.kind == FAILED:
            return f"{prefix}failed: {outcome.error}"

        result = outcome.result
        assert result is not None
        if outcome.kind == CREATED:
            words = [f"created {result.alias}"]
            if result.workspace_url:
                words.append(result.workspace_url)
            if self._hides_passwords(outcome):
                words.append(f"(passwords in {self.cards})")
            else:
                words += [
                    f"{service}={result.passwords[service]}"
                    for service in PASSWORD_ORDER
                    if service in result.passwords
                ]
            return prefix + " ".join(words)

        text = (
            f"{prefix}{result.alias} exists already ({result.state}); nothing changed"
        )
        if outcome.same_as is not None:
            text += f", same learner as line {outcome.same_as}"
        return text

    def _dict(self, outcome: "Outcome") -> dict[str, Any]:
        data = outcome.as_dict()
        if "passwords" in data and self._hides_passwords(outcome):
            data["passwords"] = {}
        return data

    def _write_card(self, outcome: "Outcome") -> None:
        result = outcome.result
        assert result is not None and self.cards_writer is not None
        passwords = result.passwords
        row = [
            outcome.line,
            result.alias,
            result.workspace_url or "",
            passwords.get("workspace", ""),
            result.gitea_url or "",
            result.alias if "gitea" in passwords else "",
            passwords.get("gitea", ""),
            result.postgres_database or "",
            result.alias if "postgres" in passwords else "",
            passwords.get("postgres", ""),
        ]
        try:
            self.cards_writer.writerow(row)
            assert self.cards_file is not None
            self.cards_file.flush()
        except OSError as exc:
            # The passwords exist nowhere else: show them rather than lose them.
            log.warning(
                "cannot write the card of line %d to '%s' (%s); its passwords"
                " are printed instead",
                outcome.line,
                self.cards,
                exc.strerror,
            )
            self.shown_here.add(outcome.line)
