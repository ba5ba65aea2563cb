"""`platformctl doctor`: say where the services and the registry disagree, and
mend what is safe to mend."""

from typing import TYPE_CHECKING

import click

from platformctl.cli import cli, json_option, options, print_json
from platformctl.errors import EXIT_SERVICE, InputError

if TYPE_CHECKING:
    from platformctl.doctor import Finding, Report

DOCTOR_EXIT_CODES = (
    "Exit codes: 0 healthy (or everything found was fixed), 1 problems remain"
    " or the registry cannot be read, 2 bad input or usage."
)


@cli.command(epilog=DOCTOR_EXIT_CODES)
@click.option("--fix", is_flag=True, help="Repair what can be repaired safely.")
@click.option(
    "--yes",
    is_flag=True,
    help="With --fix, also delete orphans: parts that no learner owns.",
)
@json_option
def doctor(fix: bool, yes: bool, as_json: bool) -> None:
    """Check each service, and compare what it holds with the registry.

    Finds orphans (parts that no learner owns), gaps (a learner's missing part),
    learners left half-made, and parts whose state is not the learner's. With
    --fix, missing parts are made again (new passwords are shown once) and states
    are set right; orphans hold data and are deleted only with --fix --yes.
    """
    from platformctl.doctor import diagnose, repair
    from platformctl.learners import open_platform

    if yes and not fix:
        raise InputError("--yes only works with --fix", "run 'doctor --fix --yes'")

    with open_platform(options().load()) as platform:
        report = diagnose(platform)
        if fix:
            repair(platform, report, delete_orphans=yes)

    if as_json:
        print_json(report.as_dict())
    else:
        for finding in report.findings:
            click.echo(_line(finding))
        click.echo(_summary(report, fix, yes))
        if report.passwords:
            click.echo("")
            click.echo("New passwords, shown this once; platformctl keeps no copy:")
            for alias, passwords in report.passwords.items():
                for service, password in passwords.items():
                    click.echo(f"  {alias}  {service:<10} {password}")

    if not report.healthy:
        click.get_current_context().exit(EXIT_SERVICE)


def _line(finding: "Finding") -> str:
    alias = finding.alias or "-"
    line = f"{finding.kind}  {alias}  {finding.service}: {finding.detail}"
    if finding.action:
        line += f" ({finding.action})"
    return line


def _summary(report: "Report", fix: bool, yes: bool) -> str:
    from platformctl.doctor import DELETE, NOTE

    learners = len(report.learners)
    checked = ", ".join(report.services) or "no service"
    scope = f"{learners} learner{'s' if learners != 1 else ''}; {checked} checked"
    notes = sum(1 for f in report.findings if f.kind == NOTE)
    fixed = sum(1 for f in report.findings if f.fixed)
    left = [f for f in report.findings if f.is_problem]
    if fixed:
        scope += f"; {fixed} fixed"
    if notes:
        scope += f"; {notes} note{'s' if notes != 1 else ''}"
    if not left:
        return f"Healthy. {scope}."

    summary = f"{len(left)} problem{'s' if len(left) != 1 else ''} left. {scope}."
    if not fix and any(f.remedy for f in left):
        summary += " Run 'platformctl doctor --fix' to repair what is safe to repair."
    elif not yes and any(f.remedy == DELETE for f in left):
        summary += " Orphans are deleted only with 'platformctl doctor --fix --yes'."
    return summary
