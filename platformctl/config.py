"""The site's config file: where it lives, what it holds, reading and writing it.

The file is TOML with one table per part of the platform. Values that are secrets
(passwords, tokens, the site key) never sit in it: it names files that hold them,
readable by their owner alone.
"""

import dataclasses
import os
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


@dataclass(frozen=True)
class WorkspaceSettings:
    """The code-server workspace containers, driven through the Docker Engine."""

    enabled: bool = True
    name_prefix: str = "platformctl"
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
class Config:
    """Everything read from one config file."""

    path: Path
    site: SiteSettings = field(default_factory=SiteSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    gitea: GiteaSettings = field(default_factory=GiteaSettings)
    workspace: WorkspaceSettings = field(default_factory=WorkspaceSettings)

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
    return Config(path=path, **sections)


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
        text = path.read_text().strip()
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
