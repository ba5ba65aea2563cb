"""`platformctl init`: everything a site needs before its first learner."""

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from platformctl import anonymizer, database
from platformctl import config as configuration
from platformctl.config import Config
from platformctl.errors import ConfigError, translate_errors
from platformctl.learners import check_site_key
from platformctl.registry import Registry

if TYPE_CHECKING:
    from psycopg2.extensions import connection

log = logging.getLogger(__name__)


def initialize(config: Config, write_config: bool) -> Iterator[str]:
    """Set the site up step by step, yielding one line per step for the operator.

    Raises ConfigError or ServiceError at the first step that fails; steps done
    before it stay done, and running it again picks up from there.
    """
    if write_config or not config.path.exists():
        configuration.write(config)
        yield f"config      written to {config.path}"
    else:
        yield f"config      {config.path} (unchanged)"

    settings = config.postgres
    for name in (settings.platform_database, settings.learners_database):
        made = create_database(config, name)
        yield f"database    {name} {'created' if made else 'present'}"

    conn = database.connect(settings, settings.platform_database)
    try:
        lock_down_platform_database(conn, settings.platform_database)
        registry = Registry(conn)
        registry.create_schema()
        yield "registry    ready"
        yield _site_key_step(config, registry)
    finally:
        conn.close()

    if settings.enabled:
        from platformctl.provisioners.postgres import PostgresProvisioner

        postgres = PostgresProvisioner(settings)
        try:
            postgres.prepare()
            postgres.check()
        finally:
            postgres.close()
        yield f"postgres    learners' database {settings.learners_database} locked down"
    else:
        yield "postgres    learner roles off"

    if config.gitea.enabled:
        from platformctl.provisioners.gitea import GiteaProvisioner

        GiteaProvisioner(config.gitea, config.site.noreply_domain).check()
        yield f"gitea       {config.gitea.url} answers; the token is an admin's"
    else:
        yield "gitea       off"

    if config.workspace.enabled:
        from platformctl.provisioners.workspace import WorkspaceProvisioner

        workspace = WorkspaceProvisioner(config.workspace)
        workspace.check()
        workspace.ensure_network()
        yield f"workspace   Docker answers; image {config.workspace.image} present"
        if config.workspace.network:
            network = config.workspace.network
            yield f"network     {network}, no traffic between learners"
    else:
        yield "workspace   off"

    if config.proxy.enabled:
        from platformctl.provisioners.proxy import ProxyProvisioner

        proxy = ProxyProvisioner(config.proxy)
        proxy.check()
        proxy.prepare()
        where = f"{config.proxy.bind_address or '*'}:{config.proxy.port}"
        yield f"proxy       Caddy answers; learners' addresses served on {where}"
    else:
        yield "proxy       off"


def _site_key_step(config: Config, registry: Registry) -> str:
    """Create the site key, unless the registry already belongs to another one."""
    path = config.secret_path
    if not path.exists() and registry.key_fingerprint() is not None:
        raise ConfigError(
            f"this registry was made with a site key that is not at '{path}'",
            "restore that key from your backup; a new one would give every learner"
            " a new alias",
        )

    created = anonymizer.create_secret(path)
    key = anonymizer.load_secret(path)
    check_site_key(registry, key, path)
    registry.record_key_fingerprint(anonymizer.key_fingerprint(key))
    state = "created" if created else "present"
    return f"site key    {state} at {path} (back it up: aliases need it)"


@translate_errors("postgres", database.library_errors)
def create_database(config: Config, name: str) -> bool:
    """Create database name, owned by the admin role, unless it exists."""
    from psycopg2 import sql

    conn = database.connect(config.postgres, "postgres")
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,)
            )
            if cursor.fetchone():
                return False
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    log.info("postgres: created database %s", name)
    return True


@translate_errors("postgres", database.library_errors)
def lock_down_platform_database(conn: "connection", name: str) -> None:
    """Let nobody but its owner connect to the platform database."""
    from psycopg2 import sql

    with conn.cursor() as cursor:
        cursor.execute(
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(name)
            )
        )
        cursor.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
