"""The learner's PostgreSQL role and schema in the shared learners' database.

Each learner gets a LOGIN role and a schema of the same name that the role owns.
Roles made by platformctl are members of one group role; that membership is how
they are told apart from roles made by anyone else, and it carries the right to
connect to the learners' database and nothing more.
"""

import logging
from typing import TYPE_CHECKING

from platformctl import database
from platformctl.config import PostgresSettings
from platformctl.errors import ConflictError, ServiceError, translate_errors

if TYPE_CHECKING:
    from psycopg2.extensions import connection, cursor

log = logging.getLogger(__name__)

SERVICE = "postgres"


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
        with database.transaction(self.conn), self.conn.cursor() as cursor:
            if not self._role_exists(cursor, alias):
                log.debug("postgres: role %s is already gone", alias)
                return False
            self._check_ours(cursor, alias)
            cursor.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
            cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(role))
            cursor.execute(sql.SQL("DROP OWNED BY {}").format(role))
            cursor.execute(sql.SQL("DROP ROLE {}").format(role))

        log.info("postgres: dropped role and schema %s", alias)
        return True

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
