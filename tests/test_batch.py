"""`platformctl add users` end to end: batches from files and standard input, run
by the real command against real PostgreSQL and Docker and the Gitea stand-in."""

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
from conftest import with_changes
from helpers import (
    gitea_learners,
    learner_roles,
    learner_schemas,
    new_email,
    registry_rows,
    run_cli,
    site_volumes,
)

from platformctl.batch import read_entries
from platformctl.provisioners.workspace import LABEL_ALIAS

LINE = re.compile(r"line (\d+): (.*)")


@pytest.fixture(autouse=True)
def remove_workspaces_afterwards(request):
    """Remove each test's containers when it ends, not when the session does.

    Choosing a host port inspects every platformctl container on the engine, so
    each container left standing slows down every test that comes after.
    """
    yield
    site = request.node.funcargs.get("site")
    if site is None:
        return
    client = request.getfixturevalue("docker_client")
    for container in site_containers(client, site):
        container.remove(force=True)
    for volume in site_volumes(client, site):
        volume.remove(force=True)


def site_containers(client, config) -> list:
    """The site's workspace containers; others' runs may remove theirs meanwhile."""
    prefix = config.workspace.name_prefix + "-"
    found = client.containers.list(
        all=True, filters={"name": prefix}, ignore_removed=True
    )
    return [container for container in found if container.name.startswith(prefix)]


def outcome_lines(stdout: str) -> dict[int, str]:
    """The per-line reports of a plain run, by input line number."""
    found = {}
    for text in stdout.splitlines():
        match = LINE.fullmatch(text)
        if match:
            found[int(match[1])] = match[2]
    return found


def snapshot(cluster, config) -> tuple[set[str], set[str]]:
    """The learner roles and schemas that exist before a test makes any."""
    return learner_roles(cluster), learner_schemas(cluster, config)


def assert_whole_learners(cluster, config, gitea, client, before) -> set[str]:
    """Every registry row is active and has each part; no part lacks a row."""
    roles_before, schemas_before = before
    rows = registry_rows(cluster, config)
    assert {state for _, state in rows} <= {"active"}, rows
    aliases = {alias for alias, _ in rows}
    assert learner_roles(cluster) - roles_before == aliases
    assert learner_schemas(cluster, config) - schemas_before == aliases
    assert set(gitea_learners(gitea)) == aliases
    containers = site_containers(client, config)
    assert {c.labels[LABEL_ALIAS] for c in containers} == aliases
    assert len(containers) == len(aliases)
    assert len(site_volumes(client, config)) == len(aliases)
    return aliases


def test_a_batch_with_bad_lines_and_duplicates(site, pg_cluster, gitea, docker_client):
    before = snapshot(pg_cluster, site)
    emails = [new_email() for _ in range(25)]
    lines = ["# sign-ups, Saturday club", "", *emails[:10], "not-an-email"]
    lines += emails[10:20]
    twice = {}
    lines.append(emails[3])
    twice[len(lines)] = lines.index(emails[3]) + 1
    lines.append("two@@example.org")
    lines += emails[20:]
    lines.append("  " + emails[7].upper() + "  ")
    twice[len(lines)] = lines.index(emails[7]) + 1
    lines.append("Jane Doe")
    bad = {lines.index("not-an-email") + 1, lines.index("two@@example.org") + 1}
    bad.add(len(lines))
    source = site.path.parent / "emails.txt"
    source.write_text("\n".join(lines) + "\n")

    result = run_cli(site, "add", "users", "--from", str(source), "--jobs", "4")

    assert result.returncode == 1, result.stderr
    reports = outcome_lines(result.stdout)
    assert len(reports) == 30
    invalid = {n for n, text in reports.items() if "is not an email address" in text}
    assert invalid == bad
    assert "'Jane Doe' is not an email address" in reports[len(lines)]
    for line, first in twice.items():
        assert reports[line].endswith(f"nothing changed, same learner as line {first}")
    created = [text for text in reports.values() if text.startswith("created ")]
    assert len(created) == 25
    for text in created:
        assert re.search(r" http://\S+ workspace=\S+ gitea=\S+ postgres=\S+$", text)
    assert "created 25, already there 2, invalid 3, failed 0" in result.stdout
    assert "shown this once" in result.stdout
    assert (
        len(assert_whole_learners(pg_cluster, site, gitea, docker_client, before)) == 25
    )


ROSTER = """\
# exported from the sign-up sheet
name,E-mail,group
"Doe, Jane",{0},blue
Kim,{1},red
Ana,not-an-email,red
Ben,,blue
Lee,{0_again},green
Sam,{2},"two
lines"
Zoe,{3},blue
"""


def roster(emails: list[str]) -> str:
    return ROSTER.format(*emails, **{"0_again": emails[0].upper()})


def test_csv_file_and_stdin_at_one_and_four_jobs_agree(site, pg_cluster, gitea):
    first = [new_email() for _ in range(4)]
    source = site.path.parent / "roster.csv"
    source.write_text(roster(first))

    one = run_cli(
        site, "add", "users", "--from", str(source), "--column", "e-mail", "--json"
    )
    four = run_cli(
        site,
        "add",
        "users",
        "--from",
        "-",
        "--column",
        "E-mail",
        "--jobs",
        "4",
        "--json",
        stdin=roster([new_email() for _ in range(4)]),
    )

    assert one.returncode == four.returncode == 1, one.stderr + four.stderr
    by_one, by_four = json.loads(one.stdout), json.loads(four.stdout)
    assert by_one["summary"] == by_four["summary"]
    assert by_one["summary"] == {
        "created": 4,
        "existing": 1,
        "invalid": 2,
        "failed": 0,
        "not_started": 0,
        "interrupted": False,
    }
    assert [item["line"] for item in by_one["created"]] == [3, 4, 8, 10]
    assert by_one["existing"][0]["line"] == 7
    assert by_one["existing"][0]["same_as"] == 3
    assert by_one["existing"][0]["alias"] == by_one["created"][0]["alias"]
    assert [item["line"] for item in by_one["invalid"]] == [5, 6]
    assert "'not-an-email' is not an email address" in by_one["invalid"][0]["error"]
    assert by_one["invalid"][1]["error"] == "the 'e-mail' column is empty"
    for item in by_one["created"]:
        assert item["created"] is True
        assert set(item["passwords"]) == {"workspace", "gitea", "postgres"}
    assert len(registry_rows(pg_cluster, site)) == 8

    again = run_cli(
        site,
        "add",
        "users",
        "--from",
        "-",
        "--jobs",
        "4",
        "--json",
        stdin="\n".join(first),
    )

    assert again.returncode == 0, again.stderr
    repeated = json.loads(again.stdout)
    assert repeated["summary"]["existing"] == 4
    assert repeated["summary"]["created"] == 0
    aliases = [item["alias"] for item in by_one["created"]]
    assert [item["alias"] for item in repeated["existing"]] == aliases
    assert all(item["passwords"] == {} for item in repeated["existing"])
    assert len(registry_rows(pg_cluster, site)) == 8


def test_usage_problems_exit_2_with_one_line(site, pg_cluster, tmp_path):
    source = tmp_path / "roster.csv"
    source.write_text(roster([new_email() for _ in range(4)]))
    cards = tmp_path / "cards.csv"
    cards.write_text("the cards of an earlier batch\n")

    problems = {
        "no column 'mail'": ["--from", str(source), "--column", "mail"],
        "cannot read": ["--from", str(tmp_path / "missing.txt")],
        "exists already": ["--from", str(source), "--cards", str(cards)],
    }
    for message, args in problems.items():
        result = run_cli(site, "add", "users", *args)

        assert result.returncode == 2, (message, result.stderr)
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr

    assert cards.read_text() == "the cards of an earlier batch\n"
    assert registry_rows(pg_cluster, site) == []


def test_the_emails_are_kept_nowhere(site, pg_cluster, gitea, docker_client):
    locals_ = [f"privacy.{uuid.uuid4().hex[:8]}" for _ in range(4)]
    invalid = f"not.an.address.{uuid.uuid4().hex[:8]}"
    source = site.path.parent / "emails.txt"
    source.write_text(
        "\n".join([f"{name}@example.org" for name in locals_] + [invalid])
    )
    cards = site.path.parent / "cards.csv"

    options = ["--from", str(source), "--jobs", "2", "--cards", str(cards)]
    result = run_cli(site, "-vv", "add", "users", *options)

    assert result.returncode == 1, result.stderr
    assert "INFO" in result.stderr, "the -vv log was captured"
    assert f"'{invalid}' is not an email address" in result.stdout
    assert "workspace=" not in result.stdout and "(passwords in" in result.stdout
    assert cards.stat().st_mode & 0o777 == 0o600
    rows = cards.read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("line,alias,workspace_url,")

    source.unlink()
    databases = (site.postgres.platform_database, site.postgres.learners_database)
    server = ["-h", pg_cluster.socket_dir, "-p", str(pg_cluster.port), "-U", "postgres"]
    dumps = [
        subprocess.run(
            ["pg_dump", *server, database], capture_output=True, text=True, check=True
        ).stdout
        for database in databases
    ]
    places = {
        "pg_dump": "".join(dumps),
        "containers": json.dumps(
            [c.attrs for c in site_containers(docker_client, site)]
        ),
        "volumes": json.dumps([v.attrs for v in site_volumes(docker_client, site)]),
        "files": "".join(
            path.read_text(errors="replace")
            for path in site.path.parent.rglob("*")
            if path.is_file()
        ),
        "stdout": result.stdout,
        "logs": result.stderr,
        "gitea": json.dumps(gitea.users),
        "server log": pg_cluster.log_path.read_text(),
    }
    for place, text in places.items():
        for name in locals_:
            assert name not in text.lower(), f"an email shows in the {place}"
        if place != "stdout":
            assert invalid not in text, f"the invalid line shows in the {place}"


def test_ctrl_c_finishes_the_learners_under_way(site, pg_cluster, gitea, docker_client):
    before = snapshot(pg_cluster, site)
    source = site.path.parent / "emails.txt"
    source.write_text("\n".join(new_email() for _ in range(16)) + "\n")
    command = [sys.executable, "-m", "platformctl", "--config", str(site.path)]
    batch = subprocess.Popen(
        [*command, "add", "users", "--from", str(source), "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(registry_rows(pg_cluster, site)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)

    batch.send_signal(signal.SIGINT)
    stdout, stderr = batch.communicate(timeout=90)

    assert batch.returncode == 130, stderr
    assert "stopping: no new learners" in stderr
    assert "Traceback" not in stderr
    summary = next(line for line in stdout.splitlines() if line.startswith("created"))
    assert "interrupted" in summary and "lines not started" in summary
    aliases = assert_whole_learners(pg_cluster, site, gitea, docker_client, before)
    assert 3 <= len(aliases) < 16
    created = [text for text in outcome_lines(stdout).values() if "created" in text]
    assert {text.split()[1] for text in created} == aliases, "a card was lost"


def test_one_gitea_failure_fails_one_line(site, pg_cluster, gitea, docker_client):
    before = snapshot(pg_cluster, site)
    gitea.fail_next("POST", r"/admin/users$", 500, "database is locked")
    source = site.path.parent / "emails.txt"
    source.write_text("\n".join(new_email() for _ in range(5)) + "\n")

    result = run_cli(site, "add", "users", "--from", str(source), "--jobs", "2")

    assert result.returncode == 1, result.stderr
    reports = outcome_lines(result.stdout)
    failed = [text for text in reports.values() if text.startswith("failed: ")]
    assert len(failed) == 1
    assert "gitea:" in failed[0] and "database is locked" in failed[0]
    assert "created 4, already there 0, invalid 0, failed 1" in result.stdout
    assert (
        len(assert_whole_learners(pg_cluster, site, gitea, docker_client, before)) == 4
    )


def test_on_a_terminal_a_progress_bar_then_the_lines_in_order(site, pg_cluster):
    source = site.path.parent / "emails.txt"
    source.write_text("\n".join([new_email(), "oops", new_email(), new_email()]))
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "platformctl", "--config", str(site.path)]
    batch = subprocess.Popen(
        [*command, "add", "users", "--from", str(source), "--jobs", "2"],
        stdout=follower,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closes when the command ends
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    stderr = batch.communicate(timeout=60)[1]

    assert batch.returncode == 1
    assert "Adding learners" in stderr
    lines = shown.decode().replace("\r\n", "\n").splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == [
        f"line {n}" for n in range(1, 5)
    ]
    assert lines[4] == "created 3, already there 0, invalid 1, failed 0"


def test_reading_lines_and_csv():
    plain = "# comment\n\n  a@example.org  \r\nnope\n# b@example.org\nA@EXAMPLE.ORG\n"
    entries = read_entries(plain, None, "x")
    assert [(e.line, e.email, e.same_as) for e in entries] == [
        (3, "a@example.org", None),
        (4, None, None),
        (6, "a@example.org", 3),
    ]
    assert "'nope' is not an email address" in (entries[1].error or "")

    semicolons = '\ufeffName;Mail\n\n# x\n"Lee; Kim";k@example.org\nAna;\n'
    entries = read_entries(semicolons.lstrip("\ufeff"), " mail ", "x")
    assert [(e.line, e.email) for e in entries] == [(4, "k@example.org"), (5, None)]
    assert repr(entries[0]).count("example") == 0, "the email stays out of reprs"


def test_a_file_without_a_single_email_is_reported_not_a_crash(site, tmp_path):
    source = tmp_path / "nothing.txt"
    source.write_text("# the class list\n\nnot-an-email\n")

    result = run_cli(site, "add", "users", "--from", str(source))

    assert result.returncode == 1
    assert "line 3:" in result.stdout + result.stderr
    assert "created 0, already there 0, invalid 1, failed 0" in result.stdout
    assert "unexpected" not in result.stderr


def test_a_batch_on_a_site_without_workspaces(site, gitea, tmp_path):
    no_workspaces = with_changes(site, workspace={"enabled": False})
    source = tmp_path / "two.txt"
    source.write_text(f"{new_email()}\n{new_email()}\n")

    result = run_cli(no_workspaces, "add", "users", "--from", str(source))

    assert result.returncode == 0, result.stderr
    assert "created 2" in result.stdout
