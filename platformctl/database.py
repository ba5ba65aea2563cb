"""Connections to PostgreSQL as the platform's admin role."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from platformctl.config import PostgresSettings, read_secret_file
from platformctl.errors import ServiceError

if TYPE_CHECKING:
    from psycopg2.extensions import connection

SERVICE = "postgres"


def library_errors() -> tuple[type[Exception], ...]:
    """The errors psycopg2 raises, for translate_errors."""
    import psycopg2

    return (psycopg2.Error,)


def connect(settings: PostgresSettings, dbname: str) -> "connection":
    """An autocommit connection to dbname as the admin role.

    Its search_path is pinned to the system catalog, so every name the tool uses
    is schema-qualified and no learner can plant a function or table that it
    would pick up by accident. Raises ServiceError when the server refuses.
    """
    import psycopg2

    password = None
    if settings.admin_password_file:
        password = read_secret_file(
            settings.admin_password_file,
            "PostgreSQL admin password",
            "[postgres] admin_password_file",
        )
    try:
        conn = psycopg2.connect(
            host=settings.host,
            port=settings.port,
            user=settings.admin_user,
            password=password,
            dbname=dbname,
            connect_timeout=10,
            application_name="platformctl",
            options="-c search_path=pg_catalog,pg_temp",
        )
    except psycopg2.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ServiceError(
            SERVICE,
            f"cannot connect to database '{dbname}' on {settings.host}:"
            f"{settings.port} as '{settings.admin_user}': {first_line}",
            "check that the server runs and the [postgres] settings",
        ) from None
    conn.autocommit = True
    return conn


@contextmanager
def transaction(conn: "connection") -> Iterator[None]:
    """Run the block in one transaction on an autocommit connection."""
    with conn.cursor() as cursor:
        cursor.execute("BEGIN")
    try:
        yield
    except BaseException:
        _rollback_quietly(conn)
        raise
    with conn.cursor() as cursor:
        cursor.execute("COMMIT")


def _rollback_quietly(conn: "connection") -> None:
    # The error that got us here is the one worth reporting; a connection that is
    # gone has nothing left to roll back.
    import psycopg2

    if conn.closed:
        return
    try:
        with conn.cursor() as cursor:
            cursor.execute("ROLLBACK")
    except psycopg2.Error:
        pass
