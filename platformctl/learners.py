"""Provisioning a learner across every enabled service, all or nothing.

A new learner is first recorded in the registry as 'provisioning', then each
service's part is made in turn: PostgreSQL, Gitea, the workspace. If any step
fails, or the operator presses Ctrl-C, the parts made by this run are removed in
reverse order and the registry row is dropped, so nothing is left behind. Should
that clean-up itself fail (a service went away), the row stays 'provisioning':
running the same command again removes what is left and starts afresh.
"""

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from platformctl import anonymizer, database, registry
from platformctl.config import Config
from platformctl.credentials import new_password
from platformctl.errors import (
    ConfigError,
    ConflictError,
    InputError,
    NotFoundError,
    PlatformError,
    ServiceError,
)
from platformctl.provisioners import Provisioner

log = logging.getLogger(__name__)


@dataclass
class AddResult:
    """What `add user` did, and what the learner needs to know."""

    alias: str
    created: bool
    state: str
    workspace_url: str | None = None
    gitea_url: str | None = None
    postgres_database: str | None = None
    passwords: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The result as plain data, for --json."""
        return dataclasses.asdict(self)


class Platform:
    """The registry and the provisioners that the config turns on."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.conn = database.connect(config.postgres, config.postgres.platform_database)
        self.registry = registry.Registry(self.conn)
        self._site_key: bytes | None = None
        self.postgres = None
        self.gitea = None
        self.workspace = None
        self.proxy = None

        if config.postgres.enabled:
            from platformctl.provisioners.postgres import PostgresProvisioner

            self.postgres = PostgresProvisioner(config.postgres)
        if config.gitea.enabled:
            from platformctl.provisioners.gitea import GiteaProvisioner

            self.gitea = GiteaProvisioner(config.gitea, config.site.noreply_domain)
        if config.workspace.enabled:
            from platformctl.provisioners.workspace import WorkspaceProvisioner

            self.workspace = WorkspaceProvisioner(config.workspace)
        if config.proxy.enabled:
            from platformctl.provisioners.proxy import ProxyProvisioner

            self.proxy = ProxyProvisioner(config.proxy)

    def site_key(self) -> bytes:
        """The site key, checked against the one the registry was made with."""
        if self._site_key is None:
            key = anonymizer.load_secret(self.config.secret_path)
            check_site_key(self.registry, key, self.config.secret_path)
            self._site_key = key
        return self._site_key

    def provisioners(self) -> list[Provisioner]:
        """The enabled services, in the order their parts are made."""
        parts: list[Any] = [self.postgres, self.gitea, self.workspace, self.proxy]
        return [part for part in parts if part is not None]

    def close(self) -> None:
        self.conn.close()
        for part in self.provisioners():
            part.close()


def check_site_key(registry_: registry.Registry, key: bytes, path: Path) -> None:
    """Raise ConfigError unless key is the one the registry was made with."""
    recorded = registry_.key_fingerprint()
    if recorded is not None and recorded != anonymizer.key_fingerprint(key):
        raise ConfigError(
            f"the site key at '{path}' is not the one this registry was made with",
            "restore the original key from your backup; another key would give"
            " every learner a new alias",
        )


@contextmanager
def open_platform(config: Config) -> Iterator[Platform]:
    """A Platform that is closed when the block ends."""
    platform = Platform(config)
    try:
        yield platform
    finally:
        platform.close()


def add_learner(platform: Platform, raw_email: str) -> AddResult:
    """Give the learner with this email an alias and a part in every service.

    Re-running it for a learner who is already there changes nothing. Raises
    InputError for a bad email (before anything is touched) and ServiceError or
    ConflictError when a service fails; nothing half-made is left behind.
    """
    email = anonymizer.normalize_email(raw_email)
    email_digest = anonymizer.digest(email, platform.site_key())

    with platform.registry.lock(email_digest):
        learner = platform.registry.find(email_digest)
        if learner is not None and learner.state != registry.PROVISIONING:
            log.debug("learner %s exists already", learner.alias)
            return _result(platform, learner.alias, learner.state)

        for provisioner in platform.provisioners():
            provisioner.check()

        if learner is None:
            alias = _claim_free_alias(platform, email_digest)
        else:
            alias = learner.alias
            log.warning("learner %s was left half-made; starting afresh", alias)
            _clear(platform, alias)

        result = _provision(platform, alias)
        platform.registry.set_state(alias, registry.ACTIVE)
        return result


# How many aliases held by objects that platformctl did not make to step over.
MAX_HELD_ALIASES = 3


def _claim_free_alias(platform: Platform, email_digest: bytes) -> str:
    """Record the learner under the first alias that no service holds for another."""
    held: set[str] = set()
    for _ in range(MAX_HELD_ALIASES + 1):
        alias = platform.registry.claim(email_digest, skip=held).alias
        try:
            _clear(platform, alias)
        except ConflictError as exc:
            log.warning("alias %s is taken outside platformctl (%s)", alias, exc)
            platform.registry.delete(alias)
            held.add(alias)
            continue
        except BaseException:
            platform.registry.delete(alias)
            raise
        return alias

    raise ServiceError(
        "registry",
        f"the aliases {', '.join(sorted(held))} are all taken by objects that"
        " platformctl did not make",
        "remove or rename those objects",
    )


def _clear(platform: Platform, alias: str) -> None:
    """Remove whatever an interrupted earlier run left under alias.

    Such parts carry platformctl's marker but their passwords are unknown, so they
    are made afresh rather than reused. Raises ConflictError for a part that
    platformctl did not make.
    """
    for part in reversed(platform.provisioners()):
        if part.remove(alias):
            log.warning(
                "removed the %s part an earlier run left for %s", part.service, alias
            )


def _provision(platform: Platform, alias: str) -> AddResult:
    passwords = {
        part.service: new_password()
        for part in platform.provisioners()
        if part.service in SERVICES
    }
    try:
        if platform.postgres is not None:
            platform.postgres.ensure(alias, passwords["postgres"])
        git_files: dict[str, str] = {}
        if platform.gitea is not None:
            gitea = platform.gitea
            gitea.ensure(alias, passwords["gitea"])
            if platform.workspace is not None:
                token = gitea.create_git_token(alias, passwords["gitea"])
                git_files = gitea.git_files(alias, token)
            if platform.config.gitea.must_change_password:
                gitea.require_password_change(alias)
        if platform.workspace is not None:
            environment, files = workspace_settings(platform, alias, passwords)
            files.update(git_files)
            platform.workspace.ensure(
                alias, passwords["workspace"], environment=environment, files=files
            )
            if platform.proxy is not None:
                port = platform.workspace.host_port(alias) or 0
                platform.proxy.ensure(alias, upstream_port=port)
    except BaseException as exc:
        _undo(platform, alias, exc)
        raise

    return _result(platform, alias, registry.ACTIVE, passwords)


def workspace_settings(
    platform: Platform, alias: str, passwords: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Environment and home files that let psql in the workspace log in alone."""
    if platform.postgres is None:
        return {}, {}

    environment = platform.postgres.environment(alias)
    pgpass = ":".join(
        _pgpass_field(value)
        for value in (
            environment["PGHOST"],
            environment["PGPORT"],
            environment["PGDATABASE"],
            alias,
            passwords["postgres"],
        )
    )
    return environment, {".pgpass": pgpass + "\n"}


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _undo(platform: Platform, alias: str, cause: BaseException) -> None:
    """Remove every part of the learner, then forget them if that worked.

    Every service is asked, not only those whose step finished: a step that was
    interrupted may still have been carried out by the service.
    """
    log.info("adding learner %s failed; removing what was made", alias)
    leftovers = _remove_parts(platform.provisioners(), alias)
    if leftovers:
        if isinstance(cause, PlatformError):
            cause.hint = (
                f"could not clean up {', '.join(leftovers)} for '{alias}';"
                " run the same command again to finish"
            )
        return
    platform.registry.delete(alias)


def _remove_parts(parts: list[Provisioner], alias: str) -> list[str]:
    """Remove each part, last made first. Returns the services that failed."""
    failed = []
    for part in reversed(parts):
        try:
            part.remove(alias)
        except Exception as exc:  # clean-up goes on past any one service's failure
            log.warning("could not remove %s part of %s: %s", part.service, alias, exc)
            failed.append(part.service)
    return failed


def _result(
    platform: Platform, alias: str, state: str, passwords: dict[str, str] | None = None
) -> AddResult:
    """The card of a learner: made just now when there are passwords to show."""
    return AddResult(
        alias=alias,
        created=passwords is not None,
        state=state,
        workspace_url=_workspace_url(platform, alias),
        gitea_url=platform.config.gitea.url or None if platform.gitea else None,
        postgres_database=(
            platform.config.postgres.learners_database if platform.postgres else None
        ),
        passwords=passwords or {},
    )


def _workspace_url(platform: Platform, alias: str) -> str | None:
    if platform.workspace is None:
        return None
    if platform.proxy is not None:
        return platform.proxy.url(alias)
    try:
        container = platform.workspace.find(alias)
    except ServiceError:
        return None
    return platform.workspace.url(container) if container is not None else None


def resolve(platform: Platform, who: str) -> registry.Learner:
    """The learner named by alias or by email. Raises NotFoundError."""
    if "@" in who:
        email = anonymizer.normalize_email(who)
        learner = platform.registry.find(anonymizer.digest(email, platform.site_key()))
        if learner is None:
            raise NotFoundError("no learner has that email", "check the spelling")
        return learner

    learner = platform.registry.get(who.strip().lower())
    if learner is None:
        raise NotFoundError(
            f"no learner has the alias '{who}'", "see 'platformctl list users'"
        )
    return learner


@dataclass
class LearnerStatus:
    """One learner as the registry and each enabled service see them."""

    alias: str
    state: str
    created_at: str
    workspace: str | None = None
    workspace_url: str | None = None
    last_activity: str | None = None
    parts: dict[str, bool] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The status as plain data, for --json."""
        return dataclasses.asdict(self)


def list_learners(platform: Platform, only: str | None = None) -> list[LearnerStatus]:
    """Every learner (or only the one aliased `only`) with each service's part.

    One question to each service, whatever the number of learners.
    """
    learners = platform.registry.all()
    if only is not None:
        learners = [learner for learner in learners if learner.alias == only]

    roles = platform.postgres.inventory() if platform.postgres else None
    accounts = platform.gitea.inventory() if platform.gitea else None
    workspaces = platform.workspace.inventory() if platform.workspace else None
    activity = platform.workspace.activity() if platform.workspace else {}
    routes = platform.proxy.inventory() if platform.proxy else None

    statuses = []
    for learner in learners:
        status = LearnerStatus(
            alias=learner.alias,
            state=learner.state,
            created_at=learner.created_at.isoformat(timespec="seconds"),
        )
        if roles is not None:
            role = roles.get(learner.alias)
            status.parts["postgres"] = bool(role and role.has_schema)
        if accounts is not None:
            status.parts["gitea"] = learner.alias in accounts
        if workspaces is not None:
            workspace = workspaces.get(learner.alias)
            status.parts["workspace"] = workspace is not None
            if workspace is not None:
                status.workspace = "running" if workspace.running else "stopped"
                status.workspace_url = workspace.url
            if routes is not None:
                status.parts["proxy"] = learner.alias in routes
                assert platform.proxy is not None
                status.workspace_url = platform.proxy.url(learner.alias)
            when = activity.get(learner.alias)
            if when is not None:
                status.last_activity = when.isoformat(timespec="seconds")
        statuses.append(status)
    return statuses


@contextmanager
def _holding(
    platform: Platform, learner: registry.Learner
) -> Iterator[registry.Learner]:
    """Hold the learner's lock, and the learner as the registry has them now.

    Another run may have changed or removed them while this one waited.
    """
    with platform.registry.lock(learner.digest):
        current = platform.registry.get(learner.alias)
        if current is None:
            raise NotFoundError(f"learner '{learner.alias}' was removed meanwhile")
        yield current


def suspend_learner(platform: Platform, learner: registry.Learner) -> list[str]:
    """Lock the learner out of every service, keeping their data.

    Returns the services where something changed. A part that is missing is
    skipped with a warning ('platformctl doctor --fix' makes it again).
    """
    with _holding(platform, learner) as learner:
        changed = _each_part(
            learner.alias,
            [
                ("workspace", platform.workspace and platform.workspace.suspend),
                ("gitea", platform.gitea and platform.gitea.suspend),
                ("postgres", platform.postgres and platform.postgres.suspend),
            ],
        )
        if learner.state != registry.SUSPENDED:
            platform.registry.set_state(learner.alias, registry.SUSPENDED)
            changed.append("registry")
        return changed


def resume_learner(platform: Platform, learner: registry.Learner) -> list[str]:
    """Let a suspended learner in again. Returns the services that changed."""
    with _holding(platform, learner) as learner:
        changed = _each_part(
            learner.alias,
            [
                ("postgres", platform.postgres and platform.postgres.resume),
                ("gitea", platform.gitea and platform.gitea.resume),
                ("workspace", platform.workspace and platform.workspace.resume),
            ],
        )
        if learner.state != registry.ACTIVE:
            platform.registry.set_state(learner.alias, registry.ACTIVE)
            changed.append("registry")
        return changed


def _each_part(alias: str, steps: list[tuple[str, Any]]) -> list[str]:
    changed = []
    for service, step in steps:
        if not step:
            continue
        try:
            if step(alias):
                changed.append(service)
        except NotFoundError as exc:
            log.warning("%s; run 'platformctl doctor --fix'", exc)
    return changed


SERVICES = ("workspace", "gitea", "postgres")


def reset_passwords(
    platform: Platform, learner: registry.Learner, services: tuple[str, ...]
) -> dict[str, str]:
    """New passwords for the chosen services; the old ones stop working.

    Raises InputError for a suspended learner or a service that is off.
    """
    for service in services:
        if getattr(platform, service) is None:
            raise InputError(
                f"the {service} service is off in the config", "choose another"
            )

    passwords = {service: new_password() for service in services}
    with _holding(platform, learner) as learner:
        if learner.state != registry.ACTIVE:
            raise InputError(
                f"learner '{learner.alias}' is {learner.state}",
                "resume the learner first",
            )
        # The workspace takes the new workspace and PostgreSQL passwords, so it
        # must run before any password changes anywhere.
        touches_workspace = "workspace" in passwords or "postgres" in passwords
        if platform.workspace is not None and touches_workspace:
            container = platform.workspace.find(learner.alias)
            if container is None or container.status != "running":
                raise InputError(
                    f"the workspace of '{learner.alias}' is not running",
                    f"run 'platformctl start user {learner.alias}' first",
                )
        if "postgres" in passwords and platform.postgres is not None:
            platform.postgres.set_password(learner.alias, passwords["postgres"])
            if platform.workspace is not None and "workspace" not in passwords:
                _, files = workspace_settings(platform, learner.alias, passwords)
                platform.workspace.write_files(learner.alias, files)
        if "gitea" in passwords and platform.gitea is not None:
            platform.gitea.set_password(learner.alias, passwords["gitea"])
        if "workspace" in passwords and platform.workspace is not None:
            files = {}
            if "postgres" in passwords:
                _, files = workspace_settings(platform, learner.alias, passwords)
            platform.workspace.set_password(
                learner.alias, passwords["workspace"], files=files
            )
    return passwords


def remove_learner(
    platform: Platform, learner: registry.Learner, keep_data: Path | None = None
) -> list[str]:
    """Remove every part of the learner that exists, then forget them.

    With keep_data, the home volume stays and the schema is saved as SQL in that
    folder first. Returns the services where something was removed. Parts that
    fail to go leave the registry row in place, so the command can be repeated.
    """
    with _holding(platform, learner) as learner:
        removed = []
        if keep_data is not None and platform.postgres is not None:
            if platform.postgres.exists(learner.alias):
                try:
                    keep_data.mkdir(parents=True, exist_ok=True, mode=0o700)
                except OSError as exc:
                    raise InputError(
                        f"cannot keep data in '{keep_data}': {exc.strerror}",
                        "name a folder that can be created",
                    ) from None
                target = keep_data / f"{learner.alias}.sql"
                platform.postgres.dump_schema(learner.alias, target)
        if platform.proxy is not None and platform.proxy.remove(learner.alias):
            removed.append("proxy")
        if platform.workspace is not None and platform.workspace.remove(
            learner.alias, keep_volume=keep_data is not None
        ):
            removed.append("workspace")
        if platform.gitea is not None and platform.gitea.remove(learner.alias):
            removed.append("gitea")
        if platform.postgres is not None and platform.postgres.remove(learner.alias):
            removed.append("postgres")
        platform.registry.delete(learner.alias)
        return removed


def stop_idle(platform: Platform, idle_for: timedelta) -> list[str]:
    """Stop the workspaces of active learners unused for longer than idle_for.

    Returns the aliases stopped. 'start user' brings one back; data is kept.
    """
    if platform.workspace is None:
        raise InputError("the workspace service is off in the config")

    now = datetime.now(UTC)
    active = {
        learner.alias: learner
        for learner in platform.registry.all()
        if learner.state == registry.ACTIVE
    }
    stopped = []
    for alias, when in sorted(platform.workspace.activity().items()):
        if alias in active and when is not None and now - when > idle_for:
            with _holding(platform, active[alias]) as learner:
                if learner.state != registry.ACTIVE:
                    continue
                if platform.workspace.suspend(alias):
                    log.info("stopped idle workspace %s (last active %s)", alias, when)
                    stopped.append(alias)
    return stopped


def start_learner(platform: Platform, learner: registry.Learner) -> bool:
    """Start a stopped workspace again. Returns whether it was stopped."""
    if platform.workspace is None:
        raise InputError("the workspace service is off in the config")
    with _holding(platform, learner) as learner:
        if learner.state != registry.ACTIVE:
            raise InputError(
                f"learner '{learner.alias}' is {learner.state}",
                "use 'platformctl resume user' to let them in again",
            )
        return platform.workspace.resume(learner.alias)
