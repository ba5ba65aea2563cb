"""The learner's PostgreSQL role and schema in the shared learners' database.

Each learner gets a LOGIN role and a schema of the same name that the role owns.
Roles made by platformctl are members of one group role; that membership is how
they are told apart from roles made by anyone else, and it carries the right to
connect to the learners' database and nothing more.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from platformctl import database
from platformctl.config import PostgresSettings, read_secret_file
from platformctl.errors import (
    ConflictError,
    NotFoundError,
    ServiceError,
    translate_errors,
)

if TYPE_CHECKING:
    from psycopg2.extensions import connection, cursor

log = logging.getLogger(__name__)

SERVICE = "postgres"


@dataclass(frozen=True)
class RoleState:
    """What PostgreSQL holds for one learner."""

    can_login: bool
    has_schema: bool


class PostgresProvisioner:
    """Learner roles and schemas on one PostgreSQL server."""

    service = SERVICE

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self._conn: connection | None = None

    @property
    def conn(self) -> "connection":
        if self._conn is None or self._conn.closed:
            self._conn = database.connect(
                self.settings, self.settings.learners_database
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    @translate_errors(SERVICE, database.library_errors)
    def check(self) -> None:
        """Raise ServiceError unless the admin role may create roles and schemas."""
        with self.conn.cursor() as cursor:
            cursor.execute(
                "SELECT rolcreaterole OR rolsuper FROM pg_catalog.pg_roles"
                " WHERE rolname = current_user"
            )
            row = cursor.fetchone()
            cursor.execute(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s",
                (self.settings.learner_group,),
            )
            has_group = cursor.fetchone() is not None
        if not row or not row[0]:
            raise ServiceError(
                SERVICE,
                f"role '{self.settings.admin_user}' may not create roles",
                f"as a superuser, run 'ALTER ROLE {self.settings.admin_user}"
                " CREATEROLE'",
            )
        if not has_group:
            raise ServiceError(
                SERVICE,
                f"the group role '{self.settings.learner_group}' is missing",
                "run 'platformctl init'",
            )

    @translate_errors(SERVICE, database.library_errors)
    def prepare(self) -> bool:
        """Create the learners' group role and lock down the learners' database.

        PUBLIC loses every right on the database and its `public` schema; the group
        may connect and make temporary tables, and learners own only their schema.
        """
        from psycopg2 import sql

        group = sql.Identifier(self.settings.learner_group)
        learners_db = sql.Identifier(self.settings.learners_database)
        changed = False
        with database.transaction(self.conn), self.conn.cursor() as cursor:
            if not self._role_exists(cursor, self.settings.learner_group):
                cursor.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(group))
                changed = True
                log.info("postgres: created group role %s", self.settings.learner_group)
            for statement in (
                "REVOKE ALL ON DATABASE {db} FROM PUBLIC",
                "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {group}",
                "REVOKE ALL ON SCHEMA public FROM PUBLIC",
            ):
                cursor.execute(sql.SQL(statement).format(db=learners_db, group=group))
        return changed

    @translate_errors(SERVICE, database.library_errors)
    def exists(self, alias: str) -> bool:
        """Whether the learner's role exists (made by platformctl or not)."""
        with self.conn.cursor() as cursor:
            return self._role_exists(cursor, alias)

    @translate_errors(SERVICE, database.library_errors)
    def ensure(self, alias: str, password: str) -> bool:
        """Create the learner's role and schema unless they exist.

        The password travels only as a SCRAM verifier made on this side: the server
        logs failing statements with their text. Raises ConflictError when a role of
        that name exists outside the learners' group.
        """
        from psycopg2 import sql
        from psycopg2.extensions import encrypt_password

        role = sql.Identifier(alias)
        changed = False
        with database.transaction(self.conn), self.conn.cursor() as cursor:
            if self._role_exists(cursor, alias):
                self._check_ours(cursor, alias)
            else:
                verifier = encrypt_password(password, alias, self.conn, "scram-sha-256")
                cursor.execute(
                    sql.SQL(
                        "CREATE ROLE {role} LOGIN PASSWORD %s CONNECTION LIMIT %s"
                        " IN ROLE {group}"
                    ).format(
                        role=role, group=sql.Identifier(self.settings.learner_group)
                    ),
                    (verifier, self.settings.connection_limit),
                )
                cursor.execute(
                    sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
                        role, sql.Literal(self.settings.statement_timeout)
                    )
                )
                cursor.execute(
                    sql.SQL("ALTER ROLE {} SET search_path = {}").format(role, role)
                )
                changed = True

            cursor.execute(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (alias,)
            )
            if cursor.fetchone() is None:
                # Only a member of a role may hand it a schema; the admin stays a
                # member no longer than that takes.
                cursor.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
                cursor.execute(
                    sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(role, role)
                )
                cursor.execute(sql.SQL("REVOKE {} FROM CURRENT_USER").format(role))
                changed = True

        if changed:
            log.info("postgres: created role and schema %s", alias)
        else:
            log.debug("postgres: role and schema %s exist already", alias)
        return changed

    @translate_errors(SERVICE, database.library_errors)
    def remove(self, alias: str) -> bool:
        """Drop the learner's schema, whatever it owns here, and the role."""
        from psycopg2 import sql

        role = sql.Identifier(alias)
        with self.conn.cursor() as cursor:
            if not self._role_exists(cursor, alias):
                log.debug("postgres: role %s is already gone", alias)
                return False
            self._check_ours(cursor, alias)
        self._end_sessions(alias)
        for other in self._other_databases_holding(alias):
            conn = database.connect(self.settings, other)
            try:
                with database.transaction(conn), conn.cursor() as cursor:
                    cursor.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
                    cursor.execute(sql.SQL("DROP OWNED BY {}").format(role))
                    cursor.execute(sql.SQL("REVOKE {} FROM CURRENT_USER").format(role))
            finally:
                conn.close()
            log.info("postgres: dropped what %s held in database %s", alias, other)

        with database.transaction(self.conn), self.conn.cursor() as cursor:
            cursor.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
            cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(role))
            cursor.execute(sql.SQL("DROP OWNED BY {}").format(role))
            cursor.execute(sql.SQL("DROP ROLE {}").format(role))

        log.info("postgres: dropped role and schema %s", alias)
        return True

    @translate_errors(SERVICE, database.library_errors)
    def inventory(self) -> dict[str, RoleState]:
        """Every learner role of platformctl's, in one query."""
        with self.conn.cursor() as cursor:
            cursor.execute(
                "SELECT r.rolname, r.rolcanlogin, n.oid IS NOT NULL"
                " FROM pg_catalog.pg_auth_members m"
                " JOIN pg_catalog.pg_roles r ON r.oid = m.member"
                " JOIN pg_catalog.pg_roles g ON g.oid = m.roleid"
                " LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = r.rolname"
                " WHERE g.rolname = %s",
                (self.settings.learner_group,),
            )
            return {
                name: RoleState(can_login=login, has_schema=schema)
                for name, login, schema in cursor.fetchall()
            }

    @translate_errors(SERVICE, database.library_errors)
    def suspend(self, alias: str) -> bool:
        """Forbid the role to log in and end the sessions it has open."""
        return self._set_login(alias, False)

    @translate_errors(SERVICE, database.library_errors)
    def resume(self, alias: str) -> bool:
        """Let the role log in again."""
        return self._set_login(alias, True)

    @translate_errors(SERVICE, database.library_errors)
    def set_password(self, alias: str, password: str) -> None:
        """Give the role a new password and end sessions opened with the old one."""
        from psycopg2 import sql
        from psycopg2.extensions import encrypt_password

        with database.transaction(self.conn), self.conn.cursor() as cursor:
            self._require_ours(cursor, alias)
            verifier = encrypt_password(password, alias, self.conn, "scram-sha-256")
            cursor.execute(
                sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(alias)),
                (verifier,),
            )
        self._end_sessions(alias)
        log.info("postgres: new password for role %s", alias)

    @translate_errors(SERVICE, database.library_errors)
    def dump_schema(self, alias: str, target: Path) -> None:
        """Write the learner's schema, tables and data as SQL to target (mode 600)."""
        import subprocess

        from psycopg2 import sql

        role = sql.Identifier(alias)
        environment = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
        if self.settings.admin_password_file:
            # The environment of a child is not in the process list; arguments are.
            environment["PGPASSWORD"] = read_secret_file(
                self.settings.admin_password_file,
                "PostgreSQL admin password",
                "[postgres] admin_password_file",
            )
        with self.conn.cursor() as cursor:
            cursor.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
        try:
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as output:
                finished = subprocess.run(
                    [
                        "pg_dump",
                        "--host",
                        self.settings.host,
                        "--port",
                        str(self.settings.port),
                        "--username",
                        self.settings.admin_user,
                        "--schema",
                        alias,
                        "--no-owner",
                        "--no-privileges",
                        self.settings.learners_database,
                    ],
                    stdout=output,
                    stderr=subprocess.PIPE,
                    env=environment,
                    check=False,
                )
        except FileNotFoundError:
            raise ServiceError(
                SERVICE, "pg_dump is not installed", "apt-get install postgresql-client"
            ) from None
        finally:
            with self.conn.cursor() as cursor:
                cursor.execute(sql.SQL("REVOKE {} FROM CURRENT_USER").format(role))
        if finished.returncode != 0:
            lines = finished.stderr.decode(errors="replace").strip().splitlines()
            raise ServiceError(
                SERVICE, f"pg_dump of '{alias}' failed: {lines[-1] if lines else '?'}"
            )
        log.info("postgres: saved schema %s to %s", alias, target)

    def _set_login(self, alias: str, login: bool) -> bool:
        from psycopg2 import sql

        with database.transaction(self.conn), self.conn.cursor() as cursor:
            self._require_ours(cursor, alias)
            cursor.execute(
                "SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = %s",
                (alias,),
            )
            changed = cursor.fetchone()[0] != login
            if changed:
                keyword = "LOGIN" if login else "NOLOGIN"
                cursor.execute(
                    sql.SQL("ALTER ROLE {} " + keyword).format(sql.Identifier(alias))
                )
        if not login:
            # NOLOGIN stops new sessions only.
            changed = self._end_sessions(alias) > 0 or changed
        if changed:
            log.info("postgres: role %s %s", alias, "may log in" if login else "locked")
        return changed

    def _end_sessions(self, alias: str) -> int:
        """End every session of the role, in any database. Returns how many."""
        from psycopg2 import sql

        role = sql.Identifier(alias)
        # A role may end the sessions of roles it is a member of; be one briefly.
        with database.transaction(self.conn), self.conn.cursor() as cursor:
            cursor.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
            cursor.execute(
                "SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid))"
                " FROM pg_catalog.pg_stat_activity WHERE usename = %s",
                (alias,),
            )
            ended = int(cursor.fetchone()[0])
            cursor.execute(sql.SQL("REVOKE {} FROM CURRENT_USER").format(role))
        if ended:
            log.info("postgres: ended %d session(s) of %s", ended, alias)
        return ended

    def _other_databases_holding(self, alias: str) -> list[str]:
        """Databases other than the learners' where the role owns or holds rights."""
        with self.conn.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT d.datname FROM pg_catalog.pg_shdepend s"
                " JOIN pg_catalog.pg_database d ON d.oid = s.dbid"
                " JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid"
                " WHERE r.rolname = %s AND d.datname <> current_database()"
                " ORDER BY 1",
                (alias,),
            )
            return [row[0] for row in cursor.fetchall()]

    def _require_ours(self, cur: "cursor", alias: str) -> None:
        if not self._role_exists(cur, alias):
            raise NotFoundError(f"postgres: learner role '{alias}' does not exist")
        self._check_ours(cur, alias)

    def environment(self, alias: str) -> dict[str, str]:
        """libpq settings with which the learner's workspace reaches their schema."""
        port = self.settings.workspace_port or self.settings.port
        return {
            "PGHOST": self.settings.workspace_host,
            "PGPORT": str(port),
            "PGDATABASE": self.settings.learners_database,
            "PGUSER": alias,
        }

    def _role_exists(self, cur: "cursor", name: str) -> bool:
        cur.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (name,))
        return cur.fetchone() is not None

    def _check_ours(self, cur: "cursor", alias: str) -> None:
        # Direct membership only: pg_has_role() says yes for any superuser.
        cur.execute(
            "SELECT 1 FROM pg_catalog.pg_auth_members m"
            " JOIN pg_catalog.pg_roles r ON r.oid = m.member"
            " JOIN pg_catalog.pg_roles g ON g.oid = m.roleid"
            " WHERE r.rolname = %s AND g.rolname = %s",
            (alias, self.settings.learner_group),
        )
        if cur.fetchone() is None:
            raise ConflictError(
                SERVICE,
                f"role '{alias}' exists but was not made by platformctl",
                "rename or drop that role, or leave it and pick another learner",
            )
