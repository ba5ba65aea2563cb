"""`platformctl add user` end to end: the real command against real PostgreSQL and
Docker, and the Gitea stand-in that checks every request against Gitea's spec."""

import itertools
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import with_changes
from helpers import (
    gitea_learners,
    learner_roles,
    learner_schemas,
    new_email,
    nothing_anywhere,
    registry_rows,
    run_cli,
    site_containers,
)

from platformctl import cli


def test_add_user_gives_every_part_and_a_card(site, pg_cluster, gitea, docker_client):
    result = run_cli(site, "add", "user", new_email())

    assert result.returncode == 0, result.stderr
    first_line = result.stdout.splitlines()[0]
    assert first_line.startswith("Learner ") and first_line.endswith(" is ready.")
    alias = first_line.split()[1]
    assert (alias, "active") in registry_rows(pg_cluster, site)
    assert alias in learner_roles(pg_cluster)
    assert alias in learner_schemas(pg_cluster, site)
    assert gitea.users[alias]["email"] == f"{alias}@noreply.test.invalid"
    assert gitea.users[alias]["must_change_password"] is True
    assert gitea.users[alias]["visibility"] == "private"
    url = next(
        line.split()[1] for line in result.stdout.splitlines() if "Workspace" in line
    )
    with urllib.request.urlopen(url + "healthz", timeout=5) as response:
        assert json.load(response)["status"] in ("alive", "expired")
    assert "shown this once" in result.stdout


def test_json_output_and_rerun_changes_nothing(site, pg_cluster, gitea, docker_client):
    email = new_email()
    first = run_cli(site, "add", "user", email, "--json")
    assert first.returncode == 0, first.stderr
    created = json.loads(first.stdout)
    assert created["created"] is True
    assert set(created["passwords"]) == {"postgres", "gitea", "workspace"}

    posts_before = sum(1 for m, p, *_ in gitea.requests if m == "POST")
    again = run_cli(site, "add", "user", "  " + email.upper() + " ", "--json")

    assert again.returncode == 0, again.stderr
    repeated = json.loads(again.stdout)
    assert repeated["alias"] == created["alias"]
    assert repeated["created"] is False
    assert repeated["passwords"] == {}
    assert repeated["workspace_url"] == created["workspace_url"]
    assert sum(1 for m, p, *_ in gitea.requests if m == "POST") == posts_before
    assert len(site_containers(docker_client, site)) == 1

    plain = run_cli(site, "add", "user", email)
    assert plain.returncode == 0
    assert "exists already" in plain.stdout and "nothing changed" in plain.stdout


def test_the_learner_psql_settings_reach_the_workspace(site, docker_client):
    result = run_cli(site, "add", "user", new_email(), "--json")
    card = json.loads(result.stdout)
    alias = card["alias"]
    container = docker_client.containers.get(f"{site.workspace.name_prefix}-{alias}")

    environment = dict(line.split("=", 1) for line in container.attrs["Config"]["Env"])
    assert environment["PGUSER"] == alias
    assert environment["PGDATABASE"] == site.postgres.learners_database
    pgpass = container.exec_run(["cat", "/home/coder/.pgpass"]).output.decode()
    assert pgpass.strip().endswith(f":{alias}:{card['passwords']['postgres']}")


MALFORMED = [
    "",
    "learner",
    "a@@example.com",
    "a@b@example.com",
    "lear ner@example.com",
    "x" * 290 + "@example.com",
    "example.com",
]


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_email_exits_2_and_creates_nothing(
    bad, site, pg_cluster, gitea, docker_client
):
    roles_before = learner_roles(pg_cluster)

    result = run_cli(site, "add", "user", bad)

    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "is not an email address" in result.stderr
    assert "Traceback" not in result.stderr
    nothing_anywhere(pg_cluster, site, gitea, docker_client, roles_before)
    assert [m for m, *_ in gitea.requests if m != "GET"] == []


def test_json_error_for_bots(site):
    result = run_cli(site, "add", "user", "not-an-email", "--json")
    assert result.returncode == 2
    payload = json.loads(result.stdout)
    assert payload["exit_code"] == 2
    assert payload["error"].startswith("'not-an-email' is not an email address")


def test_failure_at_postgres_leaves_nothing(site, pg_cluster, gitea, docker_client):
    roles_before = learner_roles(pg_cluster)
    # PostgreSQL refuses this only after the role was created, in the same
    # transaction: the role must go with it.
    broken = with_changes(site, postgres={"statement_timeout": "9999999999999d"})

    result = run_cli(broken, "add", "user", new_email())

    assert result.returncode == 1
    assert result.stderr.startswith("platformctl: error: postgres:")
    nothing_anywhere(pg_cluster, site, gitea, docker_client, roles_before)


def test_failure_at_gitea_leaves_nothing(site, pg_cluster, gitea, docker_client):
    roles_before = learner_roles(pg_cluster)
    gitea.fail_next("POST", r"/admin/users$", 500, "database is locked")

    result = run_cli(site, "add", "user", new_email())

    assert result.returncode == 1
    assert "gitea:" in result.stderr and "database is locked" in result.stderr
    nothing_anywhere(pg_cluster, site, gitea, docker_client, roles_before)


def test_failure_at_workspace_leaves_nothing(
    site, pg_cluster, gitea, docker_client, broken_image
):
    roles_before = learner_roles(pg_cluster)
    broken = with_changes(site, workspace={"image": broken_image})

    result = run_cli(broken, "add", "user", new_email())

    assert result.returncode == 1
    assert "workspace:" in result.stderr and "stopped while starting" in result.stderr
    nothing_anywhere(pg_cluster, site, gitea, docker_client, roles_before)


def test_failed_clean_up_is_finished_by_running_again(
    site, pg_cluster, gitea, docker_client, broken_image
):
    roles_before = learner_roles(pg_cluster)
    email = new_email()
    broken = with_changes(site, workspace={"image": broken_image})
    gitea.fail_next("DELETE", r"/admin/users/", 500, "gitea went away")

    failed = run_cli(broken, "add", "user", email)

    assert failed.returncode == 1
    assert "run the same command again" in failed.stderr
    [(alias, state)] = registry_rows(pg_cluster, site)
    assert state == "provisioning"
    assert gitea_learners(gitea) == [alias]

    fixed = with_changes(site, workspace={"image": site.workspace.image})
    again = run_cli(fixed, "add", "user", email, "--json")

    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["alias"] == alias
    assert registry_rows(pg_cluster, site) == [(alias, "active")]
    assert learner_roles(pg_cluster) == roles_before | {alias}
    assert gitea_learners(gitea) == [alias]
    assert len(site_containers(docker_client, site)) == 1


def test_gitea_token_without_admin_rights_stops_before_any_change(
    site, pg_cluster, gitea, docker_client
):
    roles_before = learner_roles(pg_cluster)
    gitea.add_token("teacher-token", "teacher", is_admin=False)
    Path(site.gitea.token_file).write_text("teacher-token\n")

    result = run_cli(site, "add", "user", new_email())

    assert result.returncode == 1
    assert "not a Gitea admin" in result.stderr
    nothing_anywhere(pg_cluster, site, gitea, docker_client, roles_before)


def test_a_site_without_gitea_still_works(site, gitea):
    no_gitea = with_changes(site, gitea={"enabled": False})
    result = run_cli(no_gitea, "add", "user", new_email(), "--json")
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    assert card["gitea_url"] is None and "gitea" not in card["passwords"]
    assert gitea_learners(gitea) == []


def test_add_user_never_reads_stdin(site):
    emails = [new_email() for _ in range(2)]
    script = (
        'while read -r email; do "$PYTHON" -m platformctl --config "$CONFIG"'
        ' add user "$email" --json || exit 9; done'
    )
    result = subprocess.run(
        ["bash", "-c", script],
        input="\n".join(emails) + "\n",
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHON": sys.executable,
            "CONFIG": str(site.path),
        },
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    aliases = {json.loads(line)["alias"] for line in result.stdout.splitlines()}
    assert len(aliases) == 2


def test_the_email_is_stored_nowhere(site, pg_cluster, gitea, docker_client, tmp_path):
    local = f"privacy.{uuid.uuid4().hex[:8]}"
    email = f"{local}@example.org"
    result = run_cli(site, "-vv", "add", "user", email, "--json")
    assert result.returncode == 0, result.stderr
    alias = json.loads(result.stdout)["alias"]

    dump = subprocess.run(
        [
            "pg_dump",
            "-h",
            pg_cluster.socket_dir,
            "-p",
            str(pg_cluster.port),
            "-U",
            "postgres",
            site.postgres.platform_database,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert alias in dump
    container = docker_client.containers.get(f"{site.workspace.name_prefix}-{alias}")
    volume = docker_client.volumes.get(f"{site.workspace.name_prefix}-{alias}-home")
    files = "".join(
        path.read_text(errors="replace")
        for path in site.path.parent.rglob("*")
        if path.is_file()
    )
    gitea_user = json.dumps(gitea.users[alias])
    places = {
        "pg_dump": dump,
        "container": json.dumps(container.attrs),
        "volume": json.dumps(volume.attrs),
        "logs": result.stderr,
        "files": files,
        "gitea": gitea_user,
        "server log": pg_cluster.log_path.read_text(),
        "home": container.exec_run(
            ["sh", "-c", "cat /home/coder/.* 2>/dev/null"]
        ).output.decode(errors="replace"),
    }
    for place, text in places.items():
        assert local not in text.lower(), f"the email shows in the {place}"
    assert "INFO" in result.stderr, "the -vv log was captured"


def test_parts_left_without_a_registry_row_are_made_afresh(
    site, pg_cluster, gitea, docker_client
):
    email = new_email()
    first = json.loads(run_cli(site, "add", "user", email, "--json").stdout)
    conn = pg_cluster.superuser(site.postgres.platform_database)
    with conn.cursor() as cursor:
        cursor.execute("DELETE FROM platformctl.learners")
    conn.close()

    again = run_cli(site, "add", "user", email, "--json")

    assert again.returncode == 0, again.stderr
    card = json.loads(again.stdout)
    assert card["alias"] == first["alias"] and card["created"] is True
    alias, passwords = card["alias"], card["passwords"]
    db = site.postgres.learners_database
    pg_cluster.login(alias, passwords["postgres"], db).close()
    assert gitea.users[alias]["password"] == passwords["gitea"]
    assert len(site_containers(docker_client, site)) == 1


def test_an_alias_held_outside_platformctl_is_stepped_over(site, pg_cluster):
    from psycopg2 import sql

    from platformctl import anonymizer

    email = new_email()
    key = anonymizer.load_secret(site.secret_path)
    digest = anonymizer.digest(anonymizer.normalize_email(email), key)
    first_choice, second_choice = itertools.islice(
        anonymizer.alias_candidates(digest), 2
    )
    admin = pg_cluster.superuser()
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(first_choice)))

    result = run_cli(site, "add", "user", email, "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["alias"] == second_choice
    assert registry_rows(pg_cluster, site) == [(second_choice, "active")]
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(first_choice)))
    admin.close()


def test_bad_email_is_refused_even_when_postgres_is_down(site):
    broken = with_changes(site, postgres={"port": 1})
    result = run_cli(broken, "add", "user", "not an email")
    assert result.returncode == 2
    assert "is not an email address" in result.stderr


def test_qr_code_of_the_workspace_address(site):
    import segno

    result = run_cli(site, "add", "user", new_email(), "--qr")

    assert result.returncode == 0, result.stderr
    url = next(
        line.split()[1] for line in result.stdout.splitlines() if "Workspace" in line
    )
    expected = cli.qr_code(url)
    assert expected.strip() and expected in result.stdout
    assert segno.make(url, error="m").designator  # the same library drew it


def test_git_in_the_workspace_is_set_up_for_the_learner_account(
    site, gitea, docker_client
):
    card = json.loads(run_cli(site, "add", "user", new_email(), "--json").stdout)
    alias = card["alias"]
    container = docker_client.containers.get(f"{site.workspace.name_prefix}-{alias}")

    def home_file(name: str) -> str:
        return container.exec_run(["cat", f"/home/coder/{name}"]).output.decode()

    credentials = home_file(".git-credentials").strip()
    token = credentials.rsplit("@", 1)[0].rsplit(":", 1)[1]
    assert credentials.startswith(f"http://{alias}:")
    assert credentials.endswith("@" + gitea.url.split("//")[1])
    assert gitea.token_owner(token) == (alias, ["write:repository"])
    assert f"name = {alias}" in home_file(".gitconfig")
    listing = container.exec_run(["ls", "-ln", "/home/coder/.git-credentials"])
    assert listing.output.decode().startswith("-rw-------")
    # The token was made first; the password change is asked for after it.
    assert gitea.users[alias]["must_change_password"] is True
