"""`platformctl doctor` against the real services: parts made, broken and started
behind platformctl's back, then found, and mended where that is safe."""

import io
import json
import socket
import tarfile
import uuid

import pytest
from conftest import LEARNER_GROUP, with_changes
from helpers import new_email, run_cli
from psycopg2 import sql


@pytest.fixture
def doctor_site(site):
    """The site with a learners' group of its own.

    Every test site shares one PostgreSQL cluster and, by default, one group, so
    the roles other tests leave behind would be this site's orphans.
    """
    from platformctl import setup

    group = f"{LEARNER_GROUP}_{uuid.uuid4().hex[:8]}"
    config = with_changes(site, postgres={"learner_group": group})
    list(setup.initialize(config, write_config=False))
    return config


def add(site) -> dict:
    result = run_cli(site, "add", "user", new_email(), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def doctor(site, *options: str) -> tuple[int, dict]:
    result = run_cli(site, "doctor", "--json", *options)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def kinds(report: dict) -> set[tuple[str, str, str]]:
    return {(f["kind"], f["alias"], f["service"]) for f in report["findings"]}


def as_superuser(cluster, dbname: str, statement, *params) -> list[tuple]:
    conn = cluster.superuser(dbname)
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        conn.close()


def role_exists(cluster, alias: str) -> bool:
    rows = as_superuser(
        cluster, "postgres", "SELECT 1 FROM pg_roles WHERE rolname = %s", alias
    )
    return bool(rows)


def container_name(site, alias: str) -> str:
    return f"{site.workspace.name_prefix}-{alias}"


def docker_names(client, site, alias: str) -> tuple[set[str], set[str]]:
    name = container_name(site, alias)
    containers = {
        c.name for c in client.containers.list(all=True, filters={"name": name})
    }
    volumes = {v.name for v in client.volumes.list(filters={"name": name})}
    return containers, volumes


def test_a_healthy_site_has_no_findings(doctor_site):
    add(doctor_site)

    text = run_cli(doctor_site, "doctor")
    code, report = doctor(doctor_site)

    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout == "Healthy. 1 learner; postgres, gitea, workspace checked.\n"
    assert code == 0
    assert report == {"healthy": True, "findings": [], "passwords": {}}


def test_orphans_wait_for_yes_and_a_missing_schema_is_made_again(
    doctor_site, pg_cluster, gitea, docker_client
):
    site = doctor_site
    orphan = add(site)["alias"]
    card = add(site)
    alias = card["alias"]
    as_superuser(
        pg_cluster,
        site.postgres.platform_database,
        "DELETE FROM platformctl.learners WHERE alias = %s",
        orphan,
    )
    as_superuser(
        pg_cluster,
        site.postgres.learners_database,
        sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(alias)),
    )

    code, report = doctor(site)
    text = run_cli(site, "doctor")

    assert code == 1 and report["healthy"] is False
    assert kinds(report) == {
        ("orphan", orphan, "postgres"),
        ("orphan", orphan, "gitea"),
        ("orphan", orphan, "workspace"),
        ("gap", alias, "postgres"),
    }
    assert f"gap  {alias}  postgres: schema missing\n" in text.stdout
    assert "doctor --fix" in text.stdout.splitlines()[-1]

    fixed = run_cli(site, "doctor", "--fix")

    assert fixed.returncode == 1, fixed.stderr
    assert (
        f"gap  {alias}  postgres: schema missing (fixed: made the schema)"
        in fixed.stdout
    )
    kept = [line for line in fixed.stdout.splitlines() if line.startswith("orphan")]
    assert len(kept) == 3 and all("add --yes" in line for line in kept)
    assert role_exists(pg_cluster, orphan)
    assert orphan in gitea.users
    assert docker_names(docker_client, site, orphan) == (
        {container_name(site, orphan)},
        {container_name(site, orphan) + "-home"},
    )

    learner = pg_cluster.login(
        alias, card["passwords"]["postgres"], site.postgres.learners_database
    )
    with learner.cursor() as cursor:
        cursor.execute("CREATE TABLE notes (line text)")
        cursor.execute("SELECT current_schema()")
        assert cursor.fetchone() == (alias,)
    learner.close()
    code, report = doctor(site)
    assert kinds(report) == {
        ("orphan", orphan, "postgres"),
        ("orphan", orphan, "gitea"),
        ("orphan", orphan, "workspace"),
    }

    code, report = doctor(site, "--fix", "--yes")

    assert code == 0 and report["healthy"] is True
    assert all(f["fixed"] for f in report["findings"])
    assert not role_exists(pg_cluster, orphan)
    assert orphan not in gitea.users
    assert docker_names(docker_client, site, orphan) == (set(), set())
    assert doctor(site) == (0, {"healthy": True, "findings": [], "passwords": {}})


def test_a_suspended_learner_whose_workspace_runs_is_stopped_again(
    doctor_site, docker_client
):
    site = doctor_site
    alias = add(site)["alias"]
    assert run_cli(site, "suspend", "user", alias).returncode == 0
    container = docker_client.containers.get(container_name(site, alias))
    container.start()

    code, report = doctor(site)

    assert code == 1
    assert report["findings"] == [
        {
            "kind": "mismatch",
            "alias": alias,
            "service": "workspace",
            "detail": "container runs, but the learner is suspended",
            "fixed": False,
            "action": None,
        }
    ]

    fixed = run_cli(site, "doctor", "--fix")

    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "(fixed: stopped the workspace)" in fixed.stdout
    assert fixed.stdout.splitlines()[-1] == (
        "Healthy. 1 learner; postgres, gitea, workspace checked; 1 fixed."
    )
    container.reload()
    assert container.status == "exited"
    assert doctor(site) == (0, {"healthy": True, "findings": [], "passwords": {}})


def test_missing_parts_come_back_with_new_passwords(
    doctor_site, pg_cluster, gitea, docker_client
):
    site = doctor_site
    alias = add(site)["alias"]
    docker_client.containers.get(container_name(site, alias)).remove(force=True)
    del gitea.users[alias]
    role = sql.Identifier(alias)
    as_superuser(
        pg_cluster,
        site.postgres.learners_database,
        sql.SQL(
            "DROP SCHEMA {role} CASCADE; DROP OWNED BY {role}; DROP ROLE {role}"
        ).format(role=role),
    )

    code, report = doctor(site, "--fix")

    assert code == 0, report
    assert kinds(report) == {
        ("gap", alias, "postgres"),
        ("gap", alias, "gitea"),
        ("gap", alias, "workspace"),
    }
    assert all(f["fixed"] for f in report["findings"])
    passwords = report["passwords"][alias]
    assert set(passwords) == {"postgres", "gitea", "workspace"}
    assert gitea.users[alias]["password"] == passwords["gitea"]
    container = docker_client.containers.get(container_name(site, alias))
    pgpass = container.exec_run(["cat", "/home/coder/.pgpass"]).output.decode()
    assert pgpass.strip().endswith(f":{alias}:{passwords['postgres']}")
    learner = pg_cluster.login(
        alias, passwords["postgres"], site.postgres.learners_database
    )
    learner.close()
    assert doctor(site) == (0, {"healthy": True, "findings": [], "passwords": {}})


def test_a_lost_workspace_of_a_suspended_learner_comes_back_stopped(
    doctor_site, pg_cluster, docker_client
):
    site = doctor_site
    alias = add(site)["alias"]
    assert run_cli(site, "suspend", "user", alias).returncode == 0
    docker_client.containers.get(container_name(site, alias)).remove(force=True)
    docker_client.volumes.get(container_name(site, alias) + "-home").remove()

    code, report = doctor(site, "--fix")

    assert code == 0, report
    [finding] = report["findings"]
    assert finding["detail"] == "container and home volume missing"
    assert finding["fixed"] is True
    passwords = report["passwords"][alias]
    assert set(passwords) == {"postgres", "workspace"}
    container = docker_client.containers.get(container_name(site, alias))
    assert container.status == "exited"
    chunks, _ = container.get_archive("/home/coder/.pgpass")
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        pgpass = archive.extractfile(".pgpass").read().decode()
    assert pgpass.strip().endswith(f":{alias}:{passwords['postgres']}")
    assert doctor(site) == (0, {"healthy": True, "findings": [], "passwords": {}})


def test_a_stopped_workspace_of_an_active_learner_is_only_a_note(
    doctor_site, docker_client
):
    alias = add(doctor_site)["alias"]
    docker_client.containers.get(container_name(doctor_site, alias)).stop(timeout=5)

    text = run_cli(doctor_site, "doctor", "--fix")

    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.splitlines() == [
        f"note  {alias}  workspace: container is exited (an idle stop, or by hand)"
        f" ('platformctl resume user {alias}' starts it)",
        "Healthy. 1 learner; postgres, gitea, workspace checked; 1 note.",
    ]


def test_a_half_made_learner_is_left_to_add_user(doctor_site, pg_cluster):
    as_superuser(
        pg_cluster,
        doctor_site.postgres.platform_database,
        "INSERT INTO platformctl.learners (alias, digest, state)"
        " VALUES ('crashed-run-0001', '\\x00', 'provisioning')",
    )

    code, report = doctor(doctor_site, "--fix", "--yes")

    assert code == 1
    assert report["findings"] == [
        {
            "kind": "half-made",
            "alias": "crashed-run-0001",
            "service": "registry",
            "detail": "an 'add user' did not finish (state provisioning)",
            "fixed": False,
            "action": "run 'platformctl add user' with the learner's email to finish",
        }
    ]


def test_a_service_that_does_not_answer_is_a_finding(doctor_site):
    add(doctor_site)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    down = with_changes(doctor_site, gitea={"url": f"http://127.0.0.1:{closed}"})

    text = run_cli(down, "doctor")
    code, report = doctor(down)

    assert text.returncode == 1
    assert text.stderr == ""
    assert text.stdout.startswith(
        f"service  -  gitea: no answer from http://127.0.0.1:{closed}"
    )
    assert code == 1 and report["healthy"] is False
    [finding] = report["findings"]
    assert (finding["kind"], finding["alias"], finding["service"]) == (
        "service",
        None,
        "gitea",
    )


def test_yes_alone_is_a_usage_error(doctor_site):
    result = run_cli(doctor_site, "doctor", "--yes")

    assert result.returncode == 2
    assert result.stderr == (
        "platformctl: error: --yes only works with --fix; run 'doctor --fix --yes'\n"
    )
