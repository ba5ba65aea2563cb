"""Helpers shared by the end-to-end tests: run the CLI, look into each service."""

import os
import subprocess
import sys
import uuid

from conftest import LEARNER_GROUP

from platformctl.config import Config


def run_cli(config: Config, *args: str, stdin: str | None = None, **env: str):
    """Run platformctl as an operator would, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "platformctl", "--config", str(config.path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def new_email() -> str:
    return f"Learner.{uuid.uuid4().hex[:10]}@Example.ORG"


def registry_rows(cluster, config: Config) -> list[tuple]:
    conn = cluster.superuser(config.postgres.platform_database)
    with conn.cursor() as cursor:
        cursor.execute("SELECT alias, state FROM platformctl.learners ORDER BY alias")
        rows = cursor.fetchall()
    conn.close()
    return rows


def learner_roles(cluster) -> set[str]:
    conn = cluster.superuser()
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT r.rolname FROM pg_auth_members m"
            " JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid"
            " WHERE g.rolname = %s",
            (LEARNER_GROUP,),
        )
        roles = {row[0] for row in cursor.fetchall()}
    conn.close()
    return roles


def learner_schemas(cluster, config: Config) -> set[str]:
    conn = cluster.superuser(config.postgres.learners_database)
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%'"
            " AND nspname NOT IN ('public', 'information_schema')"
        )
        schemas = {row[0] for row in cursor.fetchall()}
    conn.close()
    return schemas


def site_containers(client, config: Config) -> list:
    prefix = config.workspace.name_prefix + "-"
    found = client.containers.list(
        all=True, ignore_removed=True, filters={"name": prefix}
    )
    return [c for c in found if c.name.startswith(prefix)]


def site_volumes(client, config: Config) -> list:
    prefix = config.workspace.name_prefix + "-"
    return [v for v in client.volumes.list() if v.name.startswith(prefix)]


def gitea_learners(gitea) -> list[str]:
    """Accounts that carry the site's no-reply address: the learners'."""
    return [
        name
        for name, user in gitea.users.items()
        if user["email"].endswith("@noreply.test.invalid")
    ]


def nothing_anywhere(cluster, config, gitea, client, roles_before: set[str]) -> None:
    assert registry_rows(cluster, config) == []
    assert learner_roles(cluster) == roles_before
    assert gitea_learners(gitea) == []
    assert site_containers(client, config) == []
    assert site_volumes(client, config) == []
