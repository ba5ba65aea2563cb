"""The site's config file: where it lives, what it holds, reading and writing it.

The file is TOML with one table per part of the platform. Values that are secrets
(passwords, tokens, the site key) never sit in it: it names files that hold them,
readable by their owner alone.
"""

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platformctl.errors import ConfigError


@dataclass(frozen=True)
class SiteSettings:
    """Settings for the whole site."""

    secret_file: str = ""
    noreply_domain: str = "noreply.invalid"


@dataclass(frozen=True)
class PostgresSettings:
    """The PostgreSQL server: it always holds the registry, and, when enabled,
    a role and a schema for each learner."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 5432
    admin_user: str = "platformctl_admin"
    admin_password_file: str = ""
    platform_database: str = "platformctl"
    learners_database: str = "learners"
    learner_group: str = "platformctl_learners"
    connection_limit: int = 5
    statement_timeout: str = "30s"
    workspace_host: str = "host.docker.internal"
    workspace_port: int = 0


@dataclass(frozen=True)
class GiteaSettings:
    """The Gitea server, driven through its admin REST API."""

    enabled: bool = False
    url: str = ""
    token_file: str = ""
    timeout: float = 10.0
    verify_tls: bool = True
    workspace_url: str = ""
    must_change_password: bool = True


@dataclass(frozen=True)
class WorkspaceSettings:
    """The code-server workspace containers, driven through the Docker Engine."""

    enabled: bool = True
    name_prefix: str = "platformctl"
    network: str = "platformctl-learners"
    image: str = "platformctl/workspace-standin:latest"
    memory: str = "2g"
    cpus: float = 1.0
    pids_limit: int = 512
    restart_policy: str = "unless-stopped"
    bind_address: str = "127.0.0.1"
    public_host: str = "localhost"
    port_first: int = 20000
    port_last: int = 20999
    ready_timeout: float = 60.0
    home: str = "/home/coder"
    user: str = "1000:1000"


@dataclass(frozen=True)
class ProxySettings:
    """Caddy, reached through its admin API, giving each learner an address."""

    enabled: bool = False
    admin_url: str = "http://127.0.0.1:2019"
    layout: str = "subdomain"
    domain: str = "localhost"
    port: int = 80
    bind_address: str = ""
    tls: bool = False
    upstream_host: str = "127.0.0.1"
    timeout: float = 10.0


@dataclass(frozen=True)
class Config:
    """Everything read from one config file."""

    path: Path
    site: SiteSettings = field(default_factory=SiteSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    gitea: GiteaSettings = field(default_factory=GiteaSettings)
    workspace: WorkspaceSettings = field(default_factory=WorkspaceSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)

    @property
    def secret_path(self) -> Path:
        """The site key file; beside the config file unless the config names one."""
        if self.site.secret_file:
            return Path(self.site.secret_file).expanduser().absolute()
        return self.path.parent.absolute() / "site.key"


SECTIONS: dict[str, type] = {
    "site": SiteSettings,
    "postgres": PostgresSettings,
    "gitea": GiteaSettings,
    "workspace": WorkspaceSettings,
    "proxy": ProxySettings,
}


def default_path() -> Path:
    """The config path when neither --config nor $PLATFORMCTL_CONFIG names one."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "platformctl" / "config.toml"


def load(path: Path) -> Config:
    """Read and check the config file at path.

    Raises ConfigError naming the file, and the key when one is wrong.
    """
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"no config file at '{path}'",
            "run 'platformctl init' first, or name one with --config",
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc}") from None

    return from_dict(path, raw)


def from_dict(path: Path, raw: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML, refusing unknown keys and wrong types."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown section '[{unknown[0]}]' in '{path}'",
            f"known sections are {', '.join(SECTIONS)}",
        )

    sections = {
        name: _section(path, name, cls, raw.get(name, {}))
        for name, cls in SECTIONS.items()
    }
    config = Config(path=path, **sections)
    check_ranges(config)
    return _with_absolute_paths(config)


def _with_absolute_paths(config: Config) -> Config:
    """Relative file names in the config count from the config's own folder."""
    base = config.path.parent.absolute()

    def absolute(value: str) -> str:
        return str(base / Path(value).expanduser()) if value else value

    return dataclasses.replace(
        config,
        site=dataclasses.replace(
            config.site, secret_file=absolute(config.site.secret_file)
        ),
        postgres=dataclasses.replace(
            config.postgres,
            admin_password_file=absolute(config.postgres.admin_password_file),
        ),
        gitea=dataclasses.replace(
            config.gitea, token_file=absolute(config.gitea.token_file)
        ),
    )


_DURATION = re.compile(r"\d+\s*(us|ms|s|min|h|d)?")
_MEMORY = re.compile(r"\d+[bkmg]?", re.IGNORECASE)
_DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")


def check_ranges(config: Config) -> None:
    """Refuse values of the right type that no service would take."""
    postgres, gitea, workspace = config.postgres, config.gitea, config.workspace
    rules = [
        ("postgres", "port", 1 <= postgres.port <= 65535, "a port from 1 to 65535"),
        (
            "postgres",
            "workspace_port",
            0 <= postgres.workspace_port <= 65535,
            "0 (same as port) or a port",
        ),
        (
            "postgres",
            "connection_limit",
            postgres.connection_limit >= -1,
            "-1 (no limit) or more",
        ),
        (
            "postgres",
            "statement_timeout",
            bool(_DURATION.fullmatch(postgres.statement_timeout)),
            "a duration such as '30s' or '2min'",
        ),
        (
            "postgres",
            "learners_database",
            postgres.learners_database != postgres.platform_database,
            "another database than platform_database",
        ),
        ("gitea", "timeout", gitea.timeout > 0, "a number of seconds above 0"),
        (
            "gitea",
            "url",
            not gitea.enabled or gitea.url.startswith(("http://", "https://")),
            "an address starting with http:// or https://",
        ),
        ("workspace", "cpus", workspace.cpus > 0, "a number above 0"),
        ("workspace", "pids_limit", workspace.pids_limit > 0, "a number above 0"),
        (
            "workspace",
            "memory",
            bool(_MEMORY.fullmatch(workspace.memory)),
            "a size such as '2g' or '512m'",
        ),
        (
            "workspace",
            "name_prefix",
            bool(_DOCKER_NAME.fullmatch(workspace.name_prefix)),
            "letters, digits, '_', '.' and '-'",
        ),
        (
            "workspace",
            "network",
            not workspace.network or bool(_DOCKER_NAME.fullmatch(workspace.network)),
            "a Docker network name, or empty for Docker's default bridge",
        ),
        (
            "workspace",
            "restart_policy",
            workspace.restart_policy in _RESTART_POLICIES,
            "one of " + ", ".join(_RESTART_POLICIES),
        ),
        (
            "workspace",
            "port_last",
            1 <= workspace.port_first <= workspace.port_last <= 65535,
            "a port from port_first to 65535",
        ),
        (
            "proxy",
            "layout",
            config.proxy.layout in ("subdomain", "path"),
            "'subdomain' or 'path'",
        ),
        ("proxy", "port", 1 <= config.proxy.port <= 65535, "a port from 1 to 65535"),
        ("proxy", "timeout", config.proxy.timeout > 0, "a number of seconds above 0"),
        (
            "proxy",
            "enabled",
            not config.proxy.enabled or config.workspace.enabled,
            "false while the workspaces are off",
        ),
        (
            "workspace",
            "ready_timeout",
            workspace.ready_timeout > 0,
            "a number of seconds above 0",
        ),
    ]
    for section, key, fine, expected in rules:
        if not fine:
            value = getattr(getattr(config, section), key)
            raise ConfigError(
                f"[{section}] {key} = {value!r} in '{config.path}'"
                f" should be {expected}",
                "fix the value in the config file",
            )


def _section(path: Path, name: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"'{name}' in '{path}' must be a table, like [{name}]")

    known = {f.name: f for f in dataclasses.fields(cls)}
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"unknown key '{key}' in [{name}] of '{path}'",
                f"known keys are {', '.join(known)}",
            )
        checked[key] = _checked_value(path, name, key, known[key].type, value)
    return cls(**checked)


KIND_NAMES = {
    "str": "a string in quotes",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
}


def _checked_value(path: Path, section: str, key: str, kind: Any, value: Any) -> Any:
    kind = kind if isinstance(kind, str) else kind.__name__
    expected: dict[str, type | tuple[type, ...]] = {
        "str": str,
        "int": int,
        "float": (int, float),
        "bool": bool,
    }
    wrong_bool = isinstance(value, bool) and kind != "bool"
    if wrong_bool or not isinstance(value, expected[kind]):
        raise ConfigError(
            f"[{section}] {key} = {value!r} in '{path}' should be {KIND_NAMES[kind]}",
            "fix the value in the config file",
        )
    if kind == "float":
        return float(value)  # type: ignore[arg-type]  # checked just above
    return value


def to_dict(config: Config) -> dict[str, Any]:
    """The config as TOML-ready tables."""
    return {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}


def write(config: Config) -> None:
    """Write the config file, creating its folder; readable by its owner alone."""
    import tomli_w

    config.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = tomli_w.dumps(to_dict(config))
    descriptor = os.open(config.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def read_secret_file(path_text: str, what: str, key: str) -> str:
    """The first line of a file that holds a password or token.

    Raises ConfigError when the file is missing, empty or readable by others.
    """
    if not path_text:
        raise ConfigError(
            f"no file is named for the {what}", f"set {key} in the config file"
        )

    path = Path(path_text).expanduser()
    try:
        mode = path.stat().st_mode
        lines = path.read_text().strip().splitlines()
        text = lines[0].strip() if lines else ""
    except OSError as exc:
        raise ConfigError(
            f"cannot read the {what} from '{path}': {exc.strerror}"
        ) from None
    if mode & 0o077:
        raise ConfigError(
            f"the {what} file '{path}' can be read by others",
            f"run 'chmod 600 {path}'",
        )
    if not text:
        raise ConfigError(f"the {what} file '{path}' is empty")
    return text
