"""A learner's life after `add user`: list, show, find, suspend, resume,
reset-password and remove, through the real command and the real services."""

import json
import subprocess
import sys
import urllib.request

import docker
import psycopg2
import pytest
from helpers import (
    gitea_learners,
    learner_roles,
    new_email,
    registry_rows,
    run_cli,
    site_containers,
    site_volumes,
)


def add(site, email: str | None = None) -> dict:
    result = run_cli(site, "add", "user", email or new_email(), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def container_of(client, site, alias: str):
    return client.containers.get(f"{site.workspace.name_prefix}-{alias}")


def healthz(url: str) -> str:
    with urllib.request.urlopen(url + "healthz", timeout=5) as response:
        return json.load(response)["status"]


def test_list_users_shows_each_learner_and_part(site):
    cards = [add(site) for _ in range(2)]

    table = run_cli(site, "list", "users")
    listed = run_cli(site, "list", "users", "--json")

    assert table.returncode == 0 and listed.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "ALIAS", "STATE", "CREATED", "POSTGRES", "GITEA", "WORKSPACE", "LAST", "ACTIVE"
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    rows_json = {row["alias"]: row for row in json.loads(listed.stdout)}
    for card in cards:
        # alias, state, created (date and time), postgres, gitea, workspace, ...
        assert rows[card["alias"]][1] == "active"
        assert rows[card["alias"]][4:7] == ["yes", "yes", "running"]
        assert rows_json[card["alias"]]["workspace_url"] == card["workspace_url"]
        assert rows_json[card["alias"]]["parts"] == {
            "postgres": True,
            "gitea": True,
            "workspace": True,
        }


def test_list_users_on_an_empty_site_says_how_to_start(site):
    result = run_cli(site, "list", "users")
    assert result.returncode == 0
    assert "No learners yet" in result.stdout
    assert json.loads(run_cli(site, "list", "users", "--json").stdout) == []


def test_show_and_find_by_email_and_alias(site):
    email = new_email()
    card = add(site, email)

    found = run_cli(site, "find", "user", email.upper())
    by_email = run_cli(site, "show", "user", email, "--json")
    by_alias = run_cli(site, "show", "user", card["alias"])

    assert found.stdout.strip() == card["alias"]
    assert json.loads(by_email.stdout)["workspace_url"] == card["workspace_url"]
    assert card["workspace_url"] in by_alias.stdout
    assert f"alias       {card['alias']}" in by_alias.stdout


def test_unknown_learner_exits_3_in_one_line(site):
    for args in (
        ("find", "user", "nobody@example.org"),
        ("show", "user", "no-such-alias-0000"),
        ("suspend", "user", "nobody@example.org"),
        ("remove", "user", "no-such-alias-0000", "--yes"),
    ):
        result = run_cli(site, *args)
        assert result.returncode == 3, args
        assert len(result.stderr.strip().splitlines()) == 1
        assert "no learner has" in result.stderr


def test_find_refuses_something_that_is_not_an_email(site):
    result = run_cli(site, "find", "user", "hungry-owl-5231")
    assert result.returncode == 2
    assert "use 'show user'" in result.stderr


def test_suspend_locks_every_door_and_resume_opens_them(
    site, pg_cluster, gitea, docker_client
):
    card = add(site)
    alias, passwords = card["alias"], card["passwords"]
    db = site.postgres.learners_database
    session = pg_cluster.login(alias, passwords["postgres"], db)

    suspended = run_cli(site, "suspend", "user", alias, "--json")

    assert suspended.returncode == 0, suspended.stderr
    assert set(json.loads(suspended.stdout)["changed"]) >= {
        "workspace",
        "gitea",
        "postgres",
    }
    with pytest.raises(psycopg2.OperationalError):
        pg_cluster.login(alias, passwords["postgres"], db)
    with pytest.raises(psycopg2.OperationalError), session.cursor() as cursor:
        cursor.execute("SELECT 1")  # the open session was ended too
    assert container_of(docker_client, site, alias).status == "exited"
    assert gitea.users[alias]["prohibit_login"] is True
    assert (alias, "suspended") in registry_rows(pg_cluster, site)

    again = run_cli(site, "suspend", "user", alias)
    assert again.returncode == 0 and "nothing changed" in again.stdout

    resumed = run_cli(site, "resume", "user", alias)

    assert resumed.returncode == 0, resumed.stderr
    pg_cluster.login(alias, passwords["postgres"], db).close()
    assert healthz(card["workspace_url"]) in ("alive", "expired")
    assert gitea.users[alias]["prohibit_login"] is False
    assert (alias, "active") in registry_rows(pg_cluster, site)


def test_reset_password_changes_each_service(site, pg_cluster, gitea, docker_client):
    card = add(site)
    alias, old = card["alias"], card["passwords"]
    old_hash = _hashed_password(container_of(docker_client, site, alias))

    result = run_cli(site, "reset-password", "user", alias, "--json")

    assert result.returncode == 0, result.stderr
    new = json.loads(result.stdout)["passwords"]
    assert set(new) == {"workspace", "gitea", "postgres"}
    db = site.postgres.learners_database
    with pytest.raises(psycopg2.OperationalError):
        pg_cluster.login(alias, old["postgres"], db)
    pg_cluster.login(alias, new["postgres"], db).close()
    assert gitea.users[alias]["password"] == new["gitea"]
    assert gitea.users[alias]["must_change_password"] is True
    container = container_of(docker_client, site, alias)
    assert _hashed_password(container) != old_hash
    pgpass = container.exec_run(["cat", "/home/coder/.pgpass"]).output.decode()
    assert pgpass.strip().endswith(":" + new["postgres"])
    assert healthz(card["workspace_url"]) in ("alive", "expired"), (
        "same address as before"
    )


def test_reset_one_service_leaves_the_others(site, pg_cluster, gitea):
    card = add(site)
    alias = card["alias"]

    result = run_cli(site, "reset-password", "user", alias, "--service", "gitea")

    assert result.returncode == 0, result.stderr
    assert "gitea" in result.stdout and "postgres" not in result.stdout
    pg_cluster.login(
        alias, card["passwords"]["postgres"], site.postgres.learners_database
    ).close()
    assert gitea.users[alias]["password"] != card["passwords"]["gitea"]


def _hashed_password(container) -> str:
    return next(
        line
        for line in container.attrs["Config"]["Env"]
        if line.startswith("HASHED_PASSWORD=")
    )


def test_remove_needs_yes_when_no_one_can_answer(site, docker_client):
    card = add(site)
    result = run_cli(site, "remove", "user", card["alias"], stdin="y\n")
    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert len(site_containers(docker_client, site)) == 1


def test_remove_leaves_nothing_behind(site, pg_cluster, gitea, docker_client):
    email = new_email()
    card = add(site, email)
    alias = card["alias"]
    gitea.add_repo(alias, "my-first-game")
    session = pg_cluster.login(
        alias, card["passwords"]["postgres"], site.postgres.learners_database
    )

    result = run_cli(site, "remove", "user", email, "--yes", "--json")

    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["removed"]) == {
        "workspace",
        "gitea",
        "postgres",
    }
    assert session.closed or _session_is_gone(session)
    assert registry_rows(pg_cluster, site) == []
    assert alias not in learner_roles(pg_cluster)
    assert gitea_learners(gitea) == []
    assert site_containers(docker_client, site) == []
    assert site_volumes(docker_client, site) == []
    assert run_cli(site, "find", "user", email).returncode == 3


def _session_is_gone(session) -> bool:
    try:
        with session.cursor() as cursor:
            cursor.execute("SELECT 1")
    except psycopg2.OperationalError:
        return True
    return False


def test_remove_keep_data_saves_the_schema_and_the_home(
    site, pg_cluster, docker_client, tmp_path
):
    card = add(site)
    alias = card["alias"]
    conn = pg_cluster.login(
        alias, card["passwords"]["postgres"], site.postgres.learners_database
    )
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE scores (player text, points int)")
        cursor.execute("INSERT INTO scores VALUES ('me', 42)")
    conn.close()
    kept = tmp_path / "kept"

    result = run_cli(site, "remove", "user", alias, "--yes", "--keep-data", str(kept))

    assert result.returncode == 0, result.stderr
    dump = (kept / f"{alias}.sql").read_text()
    assert "CREATE TABLE" in dump and "scores" in dump and "42" in dump
    assert (kept / f"{alias}.sql").stat().st_mode & 0o077 == 0
    docker_client.volumes.get(f"{site.workspace.name_prefix}-{alias}-home")
    assert site_containers(docker_client, site) == []
    assert alias not in learner_roles(pg_cluster)


def test_remove_a_learner_with_parts_already_gone(
    site, pg_cluster, gitea, docker_client
):
    card = add(site)
    alias = card["alias"]
    container_of(docker_client, site, alias).remove(force=True)
    del gitea.users[alias]

    result = run_cli(site, "remove", "user", alias, "--yes", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["removed"] == ["workspace", "postgres"]
    assert registry_rows(pg_cluster, site) == []
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(f"{site.workspace.name_prefix}-{alias}-home")


def test_parallel_adds_of_one_learner_make_one(site, pg_cluster, gitea, docker_client):
    email = new_email()
    command = [
        sys.executable,
        "-m",
        "platformctl",
        "--config",
        str(site.path),
        "add",
        "user",
        email,
        "--json",
    ]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]

    assert [code for code, _, _ in results] == [0, 0, 0, 0], results
    cards = [json.loads(out) for _, out, _ in results]
    assert len({card["alias"] for card in cards}) == 1
    assert sorted(card["created"] for card in cards) == [False, False, False, True]
    assert len(registry_rows(pg_cluster, site)) == 1
    assert len(gitea_learners(gitea)) == 1
    assert len(site_containers(docker_client, site)) == 1


def test_reset_refuses_a_stopped_workspace_before_changing_anything(
    site, pg_cluster, gitea, docker_client
):
    card = add(site)
    alias = card["alias"]
    container_of(docker_client, site, alias).stop(timeout=5)

    result = run_cli(site, "reset-password", "user", alias)

    assert result.returncode == 2
    assert f"platformctl start user {alias}" in result.stderr
    pg_cluster.login(
        alias, card["passwords"]["postgres"], site.postgres.learners_database
    ).close()
    assert gitea.users[alias]["password"] == card["passwords"]["gitea"]


def test_a_home_kept_by_remove_is_a_note_for_doctor_not_an_orphan(
    site, docker_client, tmp_path
):
    card = add(site)
    kept = tmp_path / "kept"
    run_cli(site, "remove", "user", card["alias"], "--yes", "--keep-data", str(kept))

    result = run_cli(site, "doctor", "--fix", "--yes", "--json")

    mine = [
        f for f in json.loads(result.stdout)["findings"] if f["alias"] == card["alias"]
    ]
    assert [(f["kind"], f["service"]) for f in mine] == [("note", "workspace")]
    docker_client.volumes.get(f"{site.workspace.name_prefix}-{card['alias']}-home")
