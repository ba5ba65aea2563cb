"""The registry: which alias belongs to which digest, and in what state.

It is the only link from a digest to an alias, and it lives in the schema
`platformctl` of the platform database. It holds no email and no name.
"""

import logging
from collections.abc import Iterator, Set
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from platformctl import anonymizer, database
from platformctl.errors import ServiceError, translate_errors

if TYPE_CHECKING:
    from psycopg2.extensions import connection

log = logging.getLogger(__name__)

PROVISIONING = "provisioning"
ACTIVE = "active"
SUSPENDED = "suspended"

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS platformctl;
REVOKE ALL ON SCHEMA platformctl FROM PUBLIC;
CREATE TABLE IF NOT EXISTS platformctl.learners (
    alias text PRIMARY KEY,
    digest bytea NOT NULL UNIQUE,
    state text NOT NULL
        CHECK (state IN ('provisioning', 'active', 'suspended')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON platformctl.learners FROM PUBLIC;
CREATE TABLE IF NOT EXISTS platformctl.site (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    key_fingerprint text NOT NULL
);
REVOKE ALL ON platformctl.site FROM PUBLIC;
"""

# How many candidates to try before deciding that something is wrong: with about
# 2.6 billion aliases, even a site with thousands of learners needs one or two.
MAX_CANDIDATES = 100


@dataclass(frozen=True)
class Learner:
    """One registry row."""

    alias: str
    digest: bytes
    state: str
    created_at: datetime
    updated_at: datetime


class Registry:
    """The registry table, reached through one admin connection."""

    def __init__(self, conn: "connection") -> None:
        self.conn = conn

    @translate_errors("postgres", database.library_errors)
    def create_schema(self) -> None:
        """Create the registry's schema and table when missing."""
        with self.conn.cursor() as cursor:
            cursor.execute(SCHEMA_SQL)

    @translate_errors("postgres", database.library_errors)
    def key_fingerprint(self) -> str | None:
        """The fingerprint of the site key this registry was made with, if known."""
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT key_fingerprint FROM platformctl.site")
            row = cursor.fetchone()
        return str(row[0]) if row else None

    @translate_errors("postgres", database.library_errors)
    def record_key_fingerprint(self, fingerprint: str) -> None:
        """Remember which site key this registry belongs to."""
        with self.conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO platformctl.site (key_fingerprint) VALUES (%s)"
                " ON CONFLICT (only_row) DO NOTHING",
                (fingerprint,),
            )

    @translate_errors("postgres", database.library_errors)
    def find(self, email_digest: bytes) -> Learner | None:
        """The learner with this digest, if any."""
        return self._one("digest", email_digest)

    @translate_errors("postgres", database.library_errors)
    def get(self, alias: str) -> Learner | None:
        """The learner with this alias, if any."""
        return self._one("alias", alias)

    @translate_errors("postgres", database.library_errors)
    def claim(self, email_digest: bytes, skip: Set[str] = frozenset()) -> Learner:
        """Record a new learner in state 'provisioning' under the first free alias.

        Aliases held by another digest, and those in skip, are passed over, in the
        same order every time.
        """
        import psycopg2

        candidates = anonymizer.alias_candidates(email_digest)
        for _, alias in zip(range(MAX_CANDIDATES), candidates, strict=False):
            if alias in skip:
                continue
            try:
                with self.conn.cursor() as cursor:
                    cursor.execute(
                        "INSERT INTO platformctl.learners (alias, digest, state)"
                        " VALUES (%s, %s, %s)"
                        " ON CONFLICT (alias) DO NOTHING"
                        " RETURNING alias, digest, state, created_at, updated_at",
                        (alias, email_digest, PROVISIONING),
                    )
                    row = cursor.fetchone()
            except psycopg2.errors.UniqueViolation:
                raise ServiceError(
                    "registry", "this learner was registered by another run just now"
                ) from None
            if row:
                log.info("registry: recorded learner %s", alias)
                return _learner(row)
            log.debug("registry: alias %s is taken, trying the next one", alias)

        raise ServiceError(
            "registry", f"no free alias among the first {MAX_CANDIDATES} candidates"
        )

    @translate_errors("postgres", database.library_errors)
    def set_state(self, alias: str, state: str) -> None:
        """Change a learner's state."""
        with self.conn.cursor() as cursor:
            cursor.execute(
                "UPDATE platformctl.learners SET state = %s, updated_at = now()"
                " WHERE alias = %s",
                (state, alias),
            )
        log.info("registry: learner %s is now %s", alias, state)

    @translate_errors("postgres", database.library_errors)
    def delete(self, alias: str) -> bool:
        """Forget a learner. Returns whether a row was there."""
        with self.conn.cursor() as cursor:
            cursor.execute(
                "DELETE FROM platformctl.learners WHERE alias = %s", (alias,)
            )
            gone = cursor.rowcount > 0
        if gone:
            log.info("registry: forgot learner %s", alias)
        return gone

    @contextmanager
    def lock(self, email_digest: bytes) -> Iterator[None]:
        """Hold a lock on one learner, so two runs never work on them at once."""
        key = int.from_bytes(email_digest[:8], "big", signed=True)
        self._advisory("pg_advisory_lock", key)
        try:
            yield
        finally:
            if not self.conn.closed:
                self._advisory("pg_advisory_unlock", key)

    @translate_errors("postgres", database.library_errors)
    def _advisory(self, function: str, key: int) -> None:
        from psycopg2 import sql

        call = sql.SQL("SELECT pg_catalog.{}(%s)").format(sql.Identifier(function))
        with self.conn.cursor() as cursor:
            cursor.execute(call, (key,))

    @translate_errors("postgres", database.library_errors)
    def all(self) -> list[Learner]:
        """Every learner, oldest first."""
        with self.conn.cursor() as cursor:
            cursor.execute(
                "SELECT alias, digest, state, created_at, updated_at"
                " FROM platformctl.learners ORDER BY created_at, alias"
            )
            return [_learner(row) for row in cursor.fetchall()]

    def _one(self, column: str, value: object) -> Learner | None:
        from psycopg2 import sql

        query = sql.SQL(
            "SELECT alias, digest, state, created_at, updated_at"
            " FROM platformctl.learners WHERE {} = %s"
        ).format(sql.Identifier(column))
        with self.conn.cursor() as cursor:
            cursor.execute(query, (value,))
            row = cursor.fetchone()
        return _learner(row) if row else None


def _learner(row: tuple) -> Learner:  # type: ignore[type-arg]
    alias, digest, state, created_at, updated_at = row
    return Learner(alias, bytes(digest), state, created_at, updated_at)
