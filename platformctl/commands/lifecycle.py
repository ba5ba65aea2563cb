"""Commands for a learner's life on the platform: look, lock, unlock, reset, remove.

Each takes the learner by alias or by email; an email is only turned into its
digest to find the alias, never kept.
"""

import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from platformctl.cli import EXIT_CODES_HELP, cli, json_option, options, print_json
from platformctl.errors import InputError

WHO = "ALIAS_OR_EMAIL"


@cli.group("list")
def list_group() -> None:
    """List learners."""


@cli.group()
def show() -> None:
    """Show one learner."""


@cli.group()
def find() -> None:
    """Find a learner's alias."""


@cli.group()
def suspend() -> None:
    """Lock a learner out, keeping their data."""


@cli.group()
def resume() -> None:
    """Let a suspended learner in again."""


@cli.group("reset-password")
def reset_password() -> None:
    """Give a learner new passwords."""


@cli.group()
def remove() -> None:
    """Remove learners."""


@list_group.command("users", epilog=EXIT_CODES_HELP)
@json_option
def list_users(as_json: bool) -> None:
    """One row per learner: alias, state, created, workspace, and each part.

    A part marked '-' is missing on its service: 'platformctl doctor' says more.
    """
    from platformctl.learners import list_learners, open_platform

    with open_platform(options().load()) as platform:
        statuses = list_learners(platform)

    if as_json:
        print_json([status.as_dict() for status in statuses])
        return
    if not statuses:
        click.echo("No learners yet: add one with 'platformctl add user EMAIL'.")
        return
    services = [service for service in statuses[0].parts if service != "workspace"]
    header = ["ALIAS", "STATE", "CREATED", *(s.upper() for s in services)]
    has_workspace = "workspace" in statuses[0].parts
    if has_workspace:
        header += ["WORKSPACE", "LAST ACTIVE"]
    rows = []
    for status in statuses:
        row = [status.alias, status.state, _minutes(status.created_at)]
        row += ["yes" if status.parts[s] else "-" for s in services]
        if has_workspace:
            row += [status.workspace or "-", _minutes(status.last_activity)]
        rows.append(row)
    click.echo(_table(header, rows))


def _minutes(timestamp: str | None) -> str:
    return timestamp.replace("T", " ")[:16] if timestamp else "-"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in [header, *rows]
    )


@show.command("user", epilog=EXIT_CODES_HELP)
@click.argument("who", metavar=WHO)
@json_option
def show_user(who: str, as_json: bool) -> None:
    """Everything about one learner, with the workspace address."""
    from platformctl.learners import list_learners, open_platform, resolve

    with open_platform(options().load()) as platform:
        learner = resolve(platform, who)
        [status] = list_learners(platform, only=learner.alias)

    data = status.as_dict()
    if as_json:
        print_json(data)
        return
    click.echo(f"alias       {status.alias}")
    click.echo(f"state       {status.state}")
    click.echo(f"created     {status.created_at}")
    if "workspace" in status.parts:
        where = status.workspace_url or ""
        click.echo(f"workspace   {status.workspace or 'missing'}  {where}".rstrip())
        click.echo(f"last active {_minutes(status.last_activity)}")
    for service, present in status.parts.items():
        if service != "workspace":
            click.echo(f"{service:<11} {'present' if present else 'missing'}")


@find.command("user", epilog=EXIT_CODES_HELP)
@click.argument("email")
@json_option
def find_user(email: str, as_json: bool) -> None:
    """Which alias belongs to EMAIL (exit code 3 when none does)."""
    from platformctl.learners import open_platform, resolve

    if "@" not in email:
        raise InputError(
            f"'{email}' is not an email address", "to look up an alias, use 'show user'"
        )
    with open_platform(options().load()) as platform:
        learner = resolve(platform, email)

    if as_json:
        print_json({"alias": learner.alias, "state": learner.state})
    else:
        click.echo(learner.alias)


@suspend.command("user", epilog=EXIT_CODES_HELP)
@click.argument("who", metavar=WHO)
@json_option
def suspend_user(who: str, as_json: bool) -> None:
    """Stop the workspace, lock the Gitea account, forbid PostgreSQL logins and
    end open sessions. Data is kept; 'resume user' undoes it."""
    from platformctl.learners import open_platform, resolve, suspend_learner

    with open_platform(options().load()) as platform:
        learner = resolve(platform, who)
        changed = suspend_learner(platform, learner)

    _report(learner.alias, "suspended", changed, as_json)


@resume.command("user", epilog=EXIT_CODES_HELP)
@click.argument("who", metavar=WHO)
@json_option
def resume_user(who: str, as_json: bool) -> None:
    """Start the workspace and unlock the accounts of a suspended learner."""
    from platformctl.learners import open_platform, resolve, resume_learner

    with open_platform(options().load()) as platform:
        learner = resolve(platform, who)
        changed = resume_learner(platform, learner)

    _report(learner.alias, "active", changed, as_json)


def _report(alias: str, state: str, changed: list[str], as_json: bool) -> None:
    if as_json:
        print_json({"alias": alias, "state": state, "changed": changed})
    elif changed:
        click.echo(f"Learner {alias} is {state} (changed: {', '.join(changed)}).")
    else:
        click.echo(f"Learner {alias} was {state} already; nothing changed.")


@reset_password.command("user", epilog=EXIT_CODES_HELP)
@click.argument("who", metavar=WHO)
@click.option(
    "--service",
    type=click.Choice(["code", "workspace", "gitea", "postgres", "all"]),
    default="all",
    show_default=True,
    help="Whose password to reset; 'code' and 'workspace' are the same.",
)
@json_option
def reset_password_user(who: str, service: str, as_json: bool) -> None:
    """New passwords, shown this once; the old ones stop working at once."""
    from platformctl.learners import (
        SERVICES,
        open_platform,
        reset_passwords,
        resolve,
    )

    with open_platform(options().load()) as platform:
        learner = resolve(platform, who)
        if service == "all":
            chosen = tuple(s for s in SERVICES if getattr(platform, s) is not None)
        else:
            chosen = ("workspace" if service in ("code", "workspace") else service,)
        passwords = reset_passwords(platform, learner, chosen)

    if as_json:
        print_json({"alias": learner.alias, "passwords": passwords})
        return
    click.echo(f"New passwords for {learner.alias}, shown this once:")
    for name, password in passwords.items():
        click.echo(f"  {name:<10} {password}")
    if "gitea" in passwords:
        click.echo("  (Gitea asks for a new one at the next login)")


@remove.command("user", epilog=EXIT_CODES_HELP)
@click.argument("who", metavar=WHO)
@click.option("--yes", is_flag=True, help="Do not ask; for scripts.")
@click.option(
    "--keep-data",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the home volume and save the schema as SQL in this folder.",
)
@json_option
def remove_user(who: str, yes: bool, keep_data: Path | None, as_json: bool) -> None:
    """Remove the learner's workspace, Gitea account and repositories, role and
    schema, and registry entry. Parts that are already gone are skipped."""
    from platformctl.learners import open_platform, remove_learner, resolve

    with open_platform(options().load()) as platform:
        learner = resolve(platform, who)
        _confirm_removal(learner.alias, yes, keep_data)
        removed = remove_learner(platform, learner, keep_data)

    result: dict[str, Any] = {"alias": learner.alias, "removed": removed}
    if keep_data is not None:
        result["kept_in"] = str(keep_data)
    if as_json:
        print_json(result)
        return
    parts = ", ".join(removed) or "no parts were left"
    click.echo(f"Removed learner {learner.alias} ({parts}).")
    if keep_data is not None:
        click.echo(f"Home volume kept; schema saved in {keep_data}.")


def _confirm_removal(alias: str, yes: bool, keep_data: Path | None) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise InputError(
            f"removing '{alias}' needs confirmation", "add --yes when no one can answer"
        )
    what = "keeping the home folder" if keep_data else "with all their data"
    if not click.confirm(f"Remove learner {alias}, {what}?"):
        raise InputError(f"learner '{alias}' was not removed", "nothing changed")


@cli.group()
def stop() -> None:
    """Stop workspaces."""


@cli.group()
def start() -> None:
    """Start workspaces."""


@stop.command("idle", epilog=EXIT_CODES_HELP)
@click.option(
    "--after",
    required=True,
    metavar="DURATION",
    help="Idle time such as 2h, 90m, 1h30m (units s, m, h, d).",
)
@json_option
def stop_idle_command(after: str, as_json: bool) -> None:
    """Stop the workspaces of active learners unused for longer than DURATION.

    Their data stays; 'platformctl start user' brings one back. For cron, e.g.
    every ten minutes:  */10 * * * * platformctl stop idle --after 2h
    """
    from platformctl.learners import open_platform, stop_idle

    idle_for = parse_duration(after)
    with open_platform(options().load()) as platform:
        stopped = stop_idle(platform, idle_for)

    if as_json:
        print_json({"stopped": stopped})
    elif stopped:
        click.echo(f"Stopped {len(stopped)} idle workspace(s): {', '.join(stopped)}.")
    else:
        click.echo(f"No workspace has been idle for more than {after}.")


@start.command("user", epilog=EXIT_CODES_HELP)
@click.argument("who", metavar=WHO)
@json_option
def start_user(who: str, as_json: bool) -> None:
    """Start the learner's stopped workspace, e.g. after an idle stop."""
    from platformctl.learners import (
        list_learners,
        open_platform,
        resolve,
        start_learner,
    )

    with open_platform(options().load()) as platform:
        learner = resolve(platform, who)
        started = start_learner(platform, learner)
        [status] = list_learners(platform, only=learner.alias)

    if as_json:
        print_json({**status.as_dict(), "started": started})
    elif started:
        click.echo(f"Started the workspace of {learner.alias}: {status.workspace_url}")
    else:
        click.echo(f"The workspace of {learner.alias} was running already.")


_DURATION_PART = re.compile(r"(\d+)\s*([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """'2h', '90m', '1h30m' or '45s' as a timedelta. Raises InputError."""
    compact = text.strip().lower()
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact.replace(" ", ""):
        raise InputError(
            f"'{text}' is not a duration",
            "write it like 2h, 90m or 1h30m (units s, m, h, d)",
        )
    return timedelta(seconds=sum(int(n) * _SECONDS[u] for n, u in parts))
