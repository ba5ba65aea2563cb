"""Learner roles and schemas on a real PostgreSQL cluster."""

from dataclasses import replace

import psycopg2
import pytest
from psycopg2 import sql

from platformctl.credentials import new_password
from platformctl.errors import ConflictError, ServiceError
from platformctl.provisioners.postgres import PostgresProvisioner


@pytest.fixture
def postgres(site_without_docker):
    provisioner = PostgresProvisioner(site_without_docker.postgres)
    yield provisioner
    provisioner.close()


def unique_alias(request) -> str:
    import secrets

    return f"test-{request.node.name[5:15].replace('_', '')}-{secrets.token_hex(2)}"


def test_ensure_twice_creates_once_and_the_learner_logs_in(
    postgres, pg_cluster, request
):
    alias = unique_alias(request)
    password = new_password()

    assert postgres.ensure(alias, password) is True
    assert postgres.ensure(alias, password) is False

    db = postgres.settings.learners_database
    conn = pg_cluster.login(alias, password, db)
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE pets (name text)")
        cursor.execute("INSERT INTO pets VALUES ('rex')")
        cursor.execute("SELECT current_schema(), current_setting('statement_timeout')")
        assert cursor.fetchone() == (alias, "30s")
        cursor.execute("SELECT name FROM pets")
        assert cursor.fetchall() == [("rex",)]
    conn.close()


def test_learner_cannot_touch_another_learner_public_or_the_registry(
    postgres, pg_cluster, site_without_docker, request
):
    first, second = unique_alias(request), unique_alias(request)
    first_password = new_password()
    postgres.ensure(first, first_password)
    postgres.ensure(second, new_password())
    db = postgres.settings.learners_database
    admin = pg_cluster.superuser(db)
    with admin.cursor() as cursor:
        cursor.execute(
            sql.SQL("CREATE TABLE {}.diary (t text)").format(sql.Identifier(second))
        )
    admin.close()

    conn = pg_cluster.login(first, first_password, db)
    forbidden = [
        sql.SQL("SELECT * FROM {}.diary").format(sql.Identifier(second)),
        sql.SQL("CREATE TABLE {}.planted (t text)").format(sql.Identifier(second)),
        sql.SQL("CREATE TABLE public.planted (t text)"),
        sql.SQL(
            "CREATE FUNCTION public.lower(text) RETURNS text AS 'select 1' LANGUAGE sql"
        ),
    ]
    for statement in forbidden:
        with (
            conn.cursor() as cursor,
            pytest.raises(psycopg2.errors.InsufficientPrivilege),
        ):
            cursor.execute(statement)
    conn.close()

    platform_db = site_without_docker.postgres.platform_database
    admin = pg_cluster.superuser()
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT has_database_privilege(%s, %s, 'CONNECT'),"
            " has_database_privilege(%s, %s, 'CONNECT')",
            (first, platform_db, first, db),
        )
        assert cursor.fetchone() == (False, True)
    admin.close()
    for other_db in (platform_db, "postgres"):
        with pytest.raises(psycopg2.OperationalError):
            pg_cluster.login(first, first_password, other_db)


def test_role_not_made_by_platformctl_is_never_touched(postgres, pg_cluster, request):
    alias = unique_alias(request)
    admin = pg_cluster.superuser()
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(alias)))

    with pytest.raises(ConflictError, match="not made by platformctl"):
        postgres.ensure(alias, new_password())
    with pytest.raises(ConflictError):
        postgres.remove(alias)

    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (alias,))
        assert cursor.fetchone() == (1,)
        cursor.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(alias)))
    admin.close()


def test_remove_twice_drops_role_schema_and_tables(postgres, pg_cluster, request):
    alias = unique_alias(request)
    password = new_password()
    postgres.ensure(alias, password)
    conn = pg_cluster.login(alias, password, postgres.settings.learners_database)
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE notes (t text)")
    conn.close()

    assert postgres.remove(alias) is True
    assert postgres.remove(alias) is False
    assert postgres.exists(alias) is False
    admin = pg_cluster.superuser(postgres.settings.learners_database)
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (alias,))
        assert cursor.fetchone() is None
    admin.close()


def test_the_password_never_reaches_the_server_log(postgres, pg_cluster, request):
    alias = unique_alias(request)
    password = new_password()
    postgres.ensure(alias, password)
    # A failing statement is logged with its text: make one fail on purpose.
    failing = PostgresProvisioner(
        replace(postgres.settings, statement_timeout="9999999999999d")
    )
    with pytest.raises(ServiceError, match="statement_timeout"):
        failing.ensure(unique_alias(request), password)
    failing.close()
    assert password not in pg_cluster.log_path.read_text()
