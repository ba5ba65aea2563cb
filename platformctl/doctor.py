"""A site's health: does what each service holds match the registry?

`diagnose` asks each enabled service whether it answers and grants what
platformctl needs, takes one inventory from each (never one question per
learner), reads the registry and compares the two. It finds parts that no learner
owns (orphans), learners missing a part (gaps), learners left half-made by an
`add user` that did not finish, and parts whose state disagrees with the
learner's (a suspended learner whose workspace runs).

`repair` mends what is safe to mend and writes on each finding what it did.
Orphans hold data, so they are deleted only when the operator says so, and only
through the provisioners' own `remove`, which never touches a part that lacks
platformctl's marker.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from platformctl import registry
from platformctl.credentials import new_password
from platformctl.errors import PlatformError, ServiceError
from platformctl.learners import Platform, workspace_settings
from platformctl.provisioners import Provisioner

if TYPE_CHECKING:
    from platformctl.provisioners.postgres import RoleState
    from platformctl.provisioners.workspace import WorkspaceState

log = logging.getLogger(__name__)

T = TypeVar("T")

# The kinds of finding, as the operator reads them.
SERVICE_DOWN = "service"
ORPHAN = "orphan"
GAP = "gap"
HALF_MADE = "half-made"
MISMATCH = "mismatch"
NOTE = "note"

# What repair does about a finding.
RECREATE = "recreate"
CREATE_SCHEMA = "create-schema"
SUSPEND = "suspend"
RESUME = "resume"
DELETE = "delete"

# Repairs run in the order `add user` makes parts: a role made again must have
# its new password before the workspace that keeps it in ~/.pgpass is made.
SERVICE_ORDER = ("postgres", "gitea", "workspace", "proxy")
REMEDY_ORDER = (RECREATE, CREATE_SCHEMA, SUSPEND, RESUME)

# What locking and unlocking a learner's part is called, by service.
STATE_CHANGES = {
    "postgres": ("locked the role", "the role may log in"),
    "gitea": ("locked the account", "unlocked the account"),
    "workspace": ("stopped the workspace", "started the workspace"),
}

# Container states in which a workspace counts as running.
RUNNING = ("running", "restarting")


@dataclass
class Finding:
    """One thing that is not as the registry says it should be."""

    kind: str
    alias: str | None
    service: str
    detail: str
    remedy: str | None = None
    fixed: bool = False
    action: str | None = None

    @property
    def is_problem(self) -> bool:
        """Whether the finding still makes the site unhealthy; notes never do."""
        return self.kind != NOTE and not self.fixed

    def as_dict(self) -> dict[str, Any]:
        """The finding as plain data, for --json."""
        return {
            "kind": self.kind,
            "alias": self.alias,
            "service": self.service,
            "detail": self.detail,
            "fixed": self.fixed,
            "action": self.action,
        }


@dataclass
class Inventory:
    """What the enabled services that answered hold; None for the others."""

    roles: "dict[str, RoleState] | None" = None
    accounts: dict[str, dict[str, Any]] | None = None
    containers: "dict[str, WorkspaceState] | None" = None
    volumes: set[str] | None = None
    routes: set[str] | None = None


@dataclass
class Report:
    """Every finding of one run of the doctor, and the new passwords it gave."""

    findings: list[Finding] = field(default_factory=list)
    learners: dict[str, registry.Learner] = field(default_factory=dict)
    inventory: Inventory = field(default_factory=Inventory)
    services: list[str] = field(default_factory=list)
    passwords: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """No problem is left: none was found, or each one was fixed."""
        return not any(finding.is_problem for finding in self.findings)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data, for --json."""
        return {
            "healthy": self.healthy,
            "findings": [finding.as_dict() for finding in self.findings],
            "passwords": self.passwords,
        }


def diagnose(platform: Platform) -> Report:
    """Compare the registry with what every enabled service holds.

    A service that does not answer becomes a finding and is left out of the
    comparison. Raises ServiceError only when the registry cannot be read.
    """
    report = Report(services=[part.service for part in platform.provisioners()])

    # Services first, registry second: `add user` records a learner before making
    # any part, so every part seen here has its registry row by the time we read it.
    report.inventory = _take_inventory(platform, report.findings)
    learners = platform.registry.all()
    report.learners = {learner.alias: learner for learner in learners}

    report.findings += _orphans(report.inventory, set(report.learners))
    for learner in learners:
        if learner.state == registry.PROVISIONING:
            report.findings.append(
                Finding(
                    HALF_MADE,
                    learner.alias,
                    "registry",
                    "an 'add user' did not finish (state provisioning)",
                    action="run 'platformctl add user' with the learner's email"
                    " to finish",
                )
            )
        else:
            report.findings += _compare(report.inventory, learner)
    return report


def _take_inventory(platform: Platform, findings: list[Finding]) -> Inventory:
    """One check and one inventory per enabled service."""
    inventory = Inventory()
    if platform.postgres is not None:
        inventory.roles = _ask(platform.postgres, findings, platform.postgres.inventory)
    if platform.gitea is not None:
        inventory.accounts = _ask(platform.gitea, findings, platform.gitea.inventory)
    if platform.workspace is not None:
        workspace = platform.workspace
        both = _ask(
            workspace,
            findings,
            lambda: (workspace.inventory(), workspace.volume_inventory()),
        )
        if both is not None:
            inventory.containers, inventory.volumes = both
    if platform.proxy is not None:
        inventory.routes = _ask(platform.proxy, findings, platform.proxy.inventory)
    return inventory


def _ask(
    provisioner: Provisioner, findings: list[Finding], take: Callable[[], T]
) -> T | None:
    """What take() returns, if the service passes its check and answers."""
    try:
        provisioner.check()
        try:
            return take()
        except ServiceError as exc:
            # A listing races with whatever else changes on the service meanwhile
            # (Docker's list names a container that is gone by the time it is
            # inspected); a second look settles it.
            detail = _without_service(str(exc), exc.service)
            log.warning("%s: listing failed, trying once more: %s", exc.service, detail)
            return take()
    except PlatformError as exc:
        log.debug("%s: left out of the comparison: %s", provisioner.service, exc)
        findings.append(
            Finding(
                SERVICE_DOWN,
                None,
                provisioner.service,
                _without_service(str(exc), provisioner.service),
                action="not compared; fix the service and run doctor again",
            )
        )
        return None


def _without_service(text: str, service: str) -> str:
    prefix = f"{service}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _orphans(inventory: Inventory, registered: set[str]) -> list[Finding]:
    """Parts that carry platformctl's marker but belong to no registered alias."""
    findings = []
    if inventory.roles is not None:
        for alias, role in sorted(inventory.roles.items()):
            if alias not in registered:
                what = "role and schema" if role.has_schema else "role"
                findings.append(_orphan(alias, "postgres", what))
    if inventory.accounts is not None:
        for alias in sorted(inventory.accounts):
            if alias not in registered:
                findings.append(_orphan(alias, "gitea", "account"))
    if inventory.containers is not None and inventory.volumes is not None:
        for alias in sorted(set(inventory.containers) | inventory.volumes):
            if alias in registered:
                continue
            if alias not in inventory.containers:
                # A home volume alone is what 'remove user --keep-data' leaves on
                # purpose: data the operator asked to keep, never deleted here.
                findings.append(
                    Finding(
                        NOTE,
                        alias,
                        "workspace",
                        "home volume kept with no learner in the registry",
                        action="kept: delete it with 'docker volume rm' when done",
                    )
                )
                continue
            parts = []
            if alias in inventory.containers:
                parts.append("container")
            if alias in inventory.volumes:
                parts.append("home volume")
            findings.append(_orphan(alias, "workspace", " and ".join(parts)))
    if inventory.routes is not None:
        for alias in sorted(inventory.routes - registered):
            findings.append(_orphan(alias, "proxy", "route"))
    return findings


def _orphan(alias: str, service: str, what: str) -> Finding:
    return Finding(
        ORPHAN, alias, service, f"{what} with no learner in the registry", DELETE
    )


def _compare(inventory: Inventory, learner: registry.Learner) -> list[Finding]:
    """Gaps and state mismatches of one active or suspended learner."""
    alias = learner.alias
    suspended = learner.state == registry.SUSPENDED
    findings = []

    def gap(service: str, detail: str, remedy: str = RECREATE) -> None:
        findings.append(Finding(GAP, alias, service, detail, remedy))

    def mismatch(service: str, detail: str) -> None:
        remedy = SUSPEND if suspended else RESUME
        findings.append(Finding(MISMATCH, alias, service, detail, remedy))

    if inventory.roles is not None:
        role = inventory.roles.get(alias)
        if role is None:
            gap("postgres", "role and schema missing")
        else:
            if not role.has_schema:
                gap("postgres", "schema missing", CREATE_SCHEMA)
            if suspended and role.can_login:
                mismatch("postgres", "role may log in, but the learner is suspended")
            if not suspended and not role.can_login:
                mismatch("postgres", "role may not log in, but the learner is active")

    if inventory.accounts is not None:
        account = inventory.accounts.get(alias)
        if account is None:
            gap("gitea", "account missing")
        elif suspended and not account.get("prohibit_login"):
            mismatch("gitea", "account may log in, but the learner is suspended")
        elif not suspended and account.get("prohibit_login"):
            mismatch("gitea", "account is locked, but the learner is active")

    if inventory.containers is not None and inventory.volumes is not None:
        workspace = inventory.containers.get(alias)
        if workspace is None:
            if alias in inventory.volumes:
                gap("workspace", "container missing; the home volume is still there")
            else:
                gap("workspace", "container and home volume missing")
        elif suspended and workspace.status in RUNNING:
            mismatch("workspace", "container runs, but the learner is suspended")
        elif not suspended and workspace.status not in RUNNING:
            findings.append(
                Finding(
                    NOTE,
                    alias,
                    "workspace",
                    f"container is {workspace.status} (an idle stop, or by hand)",
                    action=f"'platformctl resume user {alias}' starts it",
                )
            )

    if inventory.routes is not None and alias not in inventory.routes:
        gap("proxy", "route missing")
    return findings


def repair(platform: Platform, report: Report, delete_orphans: bool) -> None:
    """Mend what is safe to mend, writing on each finding what was done.

    Missing parts are made again with new passwords (kept in report.passwords,
    to be shown once), states are brought in line with the registry, and orphans
    are deleted only with delete_orphans. A failure is written on its finding and
    the rest goes on.
    """
    by_learner: dict[str, list[Finding]] = {}
    for finding in report.findings:
        if finding.remedy in (None, DELETE) or finding.alias is None:
            continue
        by_learner.setdefault(finding.alias, []).append(finding)
    for alias, findings in by_learner.items():
        _repair_learner(platform, report, report.learners[alias], findings)

    for finding in report.findings:
        if finding.remedy != DELETE:
            continue
        if delete_orphans:
            _delete_orphan(platform, finding)
        else:
            finding.action = "kept: add --yes to delete"

    for alias in [alias for alias, given in report.passwords.items() if not given]:
        del report.passwords[alias]


def _repair_learner(
    platform: Platform,
    report: Report,
    learner: registry.Learner,
    findings: list[Finding],
) -> None:
    """Mend one learner's findings, holding the learner's lock throughout."""
    with platform.registry.lock(learner.digest):
        current = platform.registry.get(learner.alias)
        if current is None or current.state != learner.state:
            for finding in findings:
                finding.action = "skipped: the learner changed meanwhile; run again"
            return

        mender = _Mender(platform, report, learner, findings)
        findings.sort(
            key=lambda f: (
                REMEDY_ORDER.index(f.remedy or RECREATE),
                SERVICE_ORDER.index(f.service),
            )
        )
        for finding in findings:
            try:
                finding.action = mender.mend(finding)
            except PlatformError as exc:
                log.debug(
                    "could not mend %s of %s: %s", finding.service, learner.alias, exc
                )
                finding.action = f"not fixed: {exc}"
            else:
                finding.fixed = True


class _Mender:
    """The repairs of one learner, who may need several at once: a role made
    again needs its new password in the workspace's ~/.pgpass too."""

    def __init__(
        self,
        platform: Platform,
        report: Report,
        learner: registry.Learner,
        findings: list[Finding],
    ) -> None:
        self.platform = platform
        self.alias = learner.alias
        self.suspended = learner.state == registry.SUSPENDED
        self.passwords = report.passwords.setdefault(learner.alias, {})
        self.volume_kept = learner.alias in (report.inventory.volumes or set())
        self.recreating = {f.service for f in findings if f.remedy == RECREATE}

    def mend(self, finding: Finding) -> str:
        """Apply the finding's remedy; returns what was done."""
        if finding.remedy == RECREATE:
            if finding.service == "postgres":
                return self.recreate_role()
            if finding.service == "gitea":
                return self.recreate_account()
            if finding.service == "proxy":
                return self.recreate_route()
            return self.recreate_workspace()
        if finding.remedy == CREATE_SCHEMA:
            return self.create_schema()
        if finding.remedy == SUSPEND:
            return self.suspend(finding.service)
        if finding.remedy == RESUME:
            return self.resume(finding.service)
        raise ServiceError(finding.service, f"no repair for '{finding.remedy}'")

    def create_schema(self) -> str:
        postgres = self._provisioner("postgres")
        # The role exists, so ensure makes the schema alone and never uses this
        # password; a fresh one keeps a role made meanwhile out of anyone's reach.
        changed = postgres.ensure(self.alias, new_password())
        return "fixed: made the schema" if changed else "fixed: the schema is back"

    def recreate_role(self) -> str:
        postgres = self._provisioner("postgres")
        if postgres.exists(self.alias):
            # Made meanwhile by someone else: keep its password, add a missing schema.
            postgres.ensure(self.alias, new_password())
            return "fixed: the role is back; its password did not change"
        password = new_password()
        postgres.ensure(self.alias, password)
        self.passwords["postgres"] = password
        if self.suspended:
            postgres.suspend(self.alias)
        action = "fixed: made the role and schema again with a new password"
        workspace = self.platform.workspace
        if workspace is None or "workspace" in self.recreating:
            return action
        _, files = workspace_settings(self.platform, self.alias, self.passwords)
        try:
            workspace.write_files(self.alias, files)
        except PlatformError as exc:
            # The role is made and its password is shown; only psql's file is late.
            return f"{action}; ~/.pgpass not written ({exc})"
        return action + "; the workspace's ~/.pgpass has it"

    def recreate_account(self) -> str:
        gitea = self._provisioner("gitea")
        password = new_password()
        if not gitea.ensure(self.alias, password):
            return "fixed: the account is back; its password did not change"
        self.passwords["gitea"] = password
        action = "fixed: made the account again with a new password"
        workspace = self.platform.workspace
        running = workspace is not None and "workspace" not in self.recreating
        if workspace is not None and running and not self.suspended:
            # The old git token went with the old account.
            token = gitea.create_git_token(self.alias, password)
            workspace.write_files(self.alias, gitea.git_files(self.alias, token))
            action += " and a new git token in the workspace"
        if self.platform.config.gitea.must_change_password:
            gitea.require_password_change(self.alias)
        if self.suspended:
            gitea.suspend(self.alias)
            action += ", locked"
        return action

    def recreate_workspace(self) -> str:
        workspace = self.platform.workspace
        assert workspace is not None, "a workspace gap means workspaces are on"
        postgres = self.platform.postgres
        environment: dict[str, str] = {}
        files: dict[str, str] = {}
        reset_postgres = False
        if postgres is not None:
            if not self.volume_kept and "postgres" not in self.passwords:
                # ~/.pgpass went with the home volume; psql needs a password that
                # someone knows, so the role gets a new one.
                self.passwords["postgres"] = new_password()
                postgres.set_password(self.alias, self.passwords["postgres"])
                reset_postgres = True
            if "postgres" in self.passwords:
                environment, files = workspace_settings(
                    self.platform, self.alias, self.passwords
                )
            else:
                environment = postgres.environment(self.alias)

        password = new_password()
        if not workspace.ensure(
            self.alias, password, environment=environment, files=files
        ):
            return "fixed: the workspace is back; its password did not change"
        self.passwords["workspace"] = password
        action = "fixed: made the workspace again with a new password"
        if self.platform.proxy is not None:
            # The new container may listen on another host port.
            port = workspace.host_port(self.alias) or 0
            self.platform.proxy.ensure(self.alias, upstream_port=port)
        if reset_postgres:
            action += "; new PostgreSQL password in ~/.pgpass"
        if self.suspended:
            workspace.suspend(self.alias)
            action += "; stopped, as the learner is suspended"
        return action

    def recreate_route(self) -> str:
        proxy = self._provisioner("proxy")
        workspace = self._provisioner("workspace")
        port = workspace.host_port(self.alias)
        if port is None:
            raise ServiceError("proxy", "the workspace is missing; fix it first")
        proxy.ensure(self.alias, upstream_port=port)
        return f"fixed: routed {proxy.url(self.alias)} again"

    def suspend(self, service: str) -> str:
        return self._set_state(service, locked=True)

    def resume(self, service: str) -> str:
        return self._set_state(service, locked=False)

    def _set_state(self, service: str, locked: bool) -> str:
        provisioner = self._provisioner(service)
        step = provisioner.suspend if locked else provisioner.resume
        done = STATE_CHANGES[service][0 if locked else 1]
        return f"fixed: {done}" if step(self.alias) else "fixed: already so meanwhile"

    def _provisioner(self, service: str) -> Any:
        provisioner = getattr(self.platform, service)
        assert provisioner is not None, f"{service} findings mean {service} is on"
        return provisioner


def _delete_orphan(platform: Platform, finding: Finding) -> None:
    """Remove an orphan through its provisioner, unless a learner claimed it."""
    assert finding.alias is not None
    if platform.registry.get(finding.alias) is not None:
        finding.action = "kept: a learner holds this alias now; run doctor again"
        return
    provisioner = getattr(platform, finding.service)
    try:
        removed = provisioner.remove(finding.alias)
    except PlatformError as exc:
        finding.action = f"not deleted: {exc}"
        return
    finding.fixed = True
    finding.action = "fixed: deleted" if removed else "fixed: gone meanwhile"
