"""The command-line interface: parse, call the work, report.

Only this module prints, configures logging and turns errors into exit codes
(see platformctl.errors). Heavy libraries are imported inside the commands, so
`platformctl --help` starts as fast as Click itself.
"""

import json
import logging
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from platformctl import __version__
from platformctl.errors import (
    EXIT_INTERRUPTED,
    EXIT_SERVICE,
    EXIT_USAGE,
    ConfigError,
    PlatformError,
)

if TYPE_CHECKING:
    from platformctl.config import Config

log = logging.getLogger(__name__)

CONFIG_ENV = "PLATFORMCTL_CONFIG"

EXIT_CODES_HELP = (
    "Exit codes: 0 done (or already so), 1 a service failed, 2 bad input or"
    " usage, 3 not found."
)


class Options:
    """Settings shared by every command, from the top-level options."""

    def __init__(self) -> None:
        self.given_path: Path | None = None
        self.debug = False
        self.json = False

    @property
    def config_path(self) -> Path:
        from platformctl.config import default_path

        return self.given_path or default_path()

    def load(self) -> "Config":
        from platformctl.config import load

        return load(self.config_path)


# One per process: the boundary in main() needs --debug and --json even when a
# command failed before it could say so.
_options = Options()


def options() -> Options:
    """The top-level options of this run, for the command modules."""
    return _options


def json_option(command: Any) -> Any:
    """Add --json to a command: one JSON object on stdout, errors included."""

    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        _options.json = value
        return value

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,
        callback=remember,
        help="Print JSON for scripts and bots.",
    )(command)


def print_json(data: Any) -> None:
    """One line of JSON on stdout."""
    click.echo(json.dumps(data, default=str))


@click.group(epilog=EXIT_CODES_HELP)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    help="Config file [default: $PLATFORMCTL_CONFIG, then"
    " $XDG_CONFIG_HOME/platformctl/config.toml].",
)
@click.option("-v", "--verbose", count=True, help="Say what changed (-vv: everything).")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, prog_name="platformctl")
def cli(config_path: Path | None, verbose: int, debug: bool) -> None:
    """Run a small self-hosted coding platform for learners.

    Each learner gets an alias, a PostgreSQL role and schema, a Gitea account
    and a code-server workspace. No email or name is stored anywhere.
    """
    _options.given_path = config_path
    _options.debug = debug

    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose > 1 or debug:
        level = logging.DEBUG
    logging.basicConfig(
        level=level, format="platformctl: %(levelname)s: %(message)s", stream=sys.stderr
    )


@cli.group()
def add() -> None:
    """Add learners."""


@add.command("user", epilog=EXIT_CODES_HELP)
@click.argument("email")
@click.option(
    "--qr", is_flag=True, help="Also print the workspace address as a QR code."
)
@json_option
def add_user(email: str, qr: bool, as_json: bool) -> None:
    """Provision the learner with EMAIL on every enabled service.

    Prints the learner's alias, workspace address and first passwords, shown
    this once. Running it again for the same learner changes nothing.
    """
    from platformctl.anonymizer import normalize_email
    from platformctl.learners import add_learner, open_platform

    normalize_email(email)  # a bad email is refused before any service is asked
    config = _options.load()
    with open_platform(config) as platform:
        result = add_learner(platform, email)

    if as_json:
        print_json(result.as_dict())
        return
    if not result.created:
        click.echo(
            f"Learner {result.alias} exists already ({result.state}); nothing changed."
        )
        if result.workspace_url:
            click.echo(f"  Workspace   {result.workspace_url}")
        return
    click.echo(_card(result.as_dict()))
    if qr and result.workspace_url:
        click.echo(qr_code(result.workspace_url))


def qr_code(text: str) -> str:
    """text as a QR code drawn with block characters, for a phone to scan."""
    import io

    import segno

    drawing = io.StringIO()
    segno.make(text, error="m").terminal(out=drawing, compact=True)
    return drawing.getvalue()


def _card(result: dict[str, Any]) -> str:
    """The text an operator hands to the learner."""
    alias = result["alias"]
    passwords = result["passwords"]
    lines = [f"Learner {alias} is ready.", ""]
    if result["workspace_url"]:
        lines.append(f"  Workspace   {result['workspace_url']}")
        lines.append(f"              password {passwords['workspace']}")
    if result["gitea_url"]:
        lines.append(f"  Gitea       {result['gitea_url']}")
        lines.append(f"              user {alias}, first password {passwords['gitea']}")
        lines.append("              (Gitea asks for a new one at the first login)")
    if result["postgres_database"]:
        lines.append(
            f"  PostgreSQL  database {result['postgres_database']}, role {alias},"
            f" password {passwords['postgres']}"
        )
        if result["workspace_url"]:
            lines.append("              (psql in the workspace logs in by itself)")
    lines += ["", "These passwords are shown this once; platformctl keeps no copy."]
    return "\n".join(lines)


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--pg-host", help="PostgreSQL host or socket folder.")
@click.option("--pg-port", type=int, help="PostgreSQL port.")
@click.option("--pg-admin-user", help="PostgreSQL role that platformctl acts as.")
@click.option(
    "--pg-admin-password-file",
    type=click.Path(dir_okay=False),
    help="File holding that role's password (mode 600).",
)
@click.option("--workspace-pghost", help="PostgreSQL host as workspaces reach it.")
@click.option("--workspace-image", help="Docker image of the workspaces.")
@click.option("--public-host", help="Host name in the workspace addresses.")
@click.option("--bind-address", help="Host address the workspace ports listen on.")
@click.option("--gitea-url", help="Gitea's base URL; turns Gitea on.")
@click.option(
    "--gitea-token-file",
    type=click.Path(dir_okay=False),
    help="File holding a Gitea admin token (mode 600).",
)
@click.option("--no-gitea", is_flag=True, help="Turn Gitea off.")
@click.option("--no-workspace", is_flag=True, help="Turn the workspaces off.")
@click.option("--proxy-admin-url", help="Caddy's admin API; turns the proxy on.")
@click.option(
    "--proxy-layout",
    type=click.Choice(["subdomain", "path"]),
    help="ALIAS.DOMAIN, or DOMAIN/ALIAS/.",
)
@click.option("--proxy-domain", help="Host name of the learners' addresses.")
@click.option("--proxy-port", type=int, help="Port Caddy serves learners on.")
@click.option(
    "--proxy-bind-address", help="Address Caddy serves learners on (default: all)."
)
@click.option("--no-proxy", is_flag=True, help="Turn the proxy off.")
def init(**given: Any) -> None:
    """Write the config, create the site key and the databases, check services.

    Options given change those settings in the config file; the rest keep
    their current or default values. Safe to run again.
    """
    from platformctl import setup

    config = _config_for_init(given)
    for line in setup.initialize(config, write_config=_changed_by(given)):
        click.echo(line)


def _changed_by(given: dict[str, Any]) -> bool:
    return any(value not in (None, False) for value in given.values())


def _config_for_init(given: dict[str, Any]) -> "Config":
    from dataclasses import replace

    from platformctl.config import Config, check_ranges, load

    path = _options.config_path
    config = load(path) if path.exists() else Config(path)

    postgres = {
        "host": given["pg_host"],
        "port": given["pg_port"],
        "admin_user": given["pg_admin_user"],
        "admin_password_file": _absolute(given["pg_admin_password_file"]),
        "workspace_host": given["workspace_pghost"],
    }
    workspace = {
        "image": given["workspace_image"],
        "public_host": given["public_host"],
        "bind_address": given["bind_address"],
    }
    gitea: dict[str, Any] = {
        "url": given["gitea_url"],
        "token_file": _absolute(given["gitea_token_file"]),
    }
    if given["gitea_url"]:
        gitea["enabled"] = True
    if given["no_gitea"]:
        gitea["enabled"] = False
    if given["no_workspace"]:
        workspace["enabled"] = False
    proxy: dict[str, Any] = {
        "admin_url": given["proxy_admin_url"],
        "layout": given["proxy_layout"],
        "domain": given["proxy_domain"],
        "port": given["proxy_port"],
        "bind_address": given["proxy_bind_address"],
    }
    if given["proxy_admin_url"]:
        proxy["enabled"] = True
    if given["no_proxy"]:
        proxy["enabled"] = False

    def changed(section: Any, values: dict[str, Any]) -> Any:
        return replace(section, **{k: v for k, v in values.items() if v is not None})

    config = replace(
        config,
        postgres=changed(config.postgres, postgres),
        workspace=changed(config.workspace, workspace),
        gitea=changed(config.gitea, gitea),
        proxy=changed(config.proxy, proxy),
    )
    check_ranges(config)
    if config.gitea.enabled and not (config.gitea.url and config.gitea.token_file):
        raise ConfigError(
            "Gitea is on but its URL or token file is not set",
            "give --gitea-url and --gitea-token-file, or --no-gitea",
        )
    return config


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


# The command modules add their commands to the groups above.
from platformctl.commands import batch, doctor, lifecycle  # noqa: E402, F401


def main() -> None:
    """The entry point: run the command tree and turn errors into exit codes."""
    # A service manager or a closed terminal stops us like Ctrl-C does, so that
    # a learner half-way through is rolled back all the same.
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(stop_signal) is not signal.SIG_IGN:  # nohup stays
            signal.signal(stop_signal, _interrupt)
    try:
        status = cli.main(prog_name="platformctl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("platformctl: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("platformctl: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        if _options.json or "--json" in sys.argv[1:]:
            print_json({"error": exc.format_message(), "exit_code": exc.exit_code})
        sys.exit(exc.exit_code)
    except PlatformError as exc:
        _fail(str(exc), exc.exit_code, exc)
    except Exception as exc:
        _fail(
            f"unexpected {type(exc).__name__}: {exc}; run again with --debug"
            " and report the traceback",
            EXIT_SERVICE,
            exc,
        )
    sys.exit(status if isinstance(status, int) else 0)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _fail(message: str, code: int, exc: BaseException) -> None:
    if _options.debug:
        traceback.print_exception(exc, file=sys.stderr)
    first_line = message.splitlines()[0] if message else "failed"
    click.echo(f"platformctl: error: {first_line}", err=True)
    if _options.json:
        click.echo(json.dumps({"error": first_line, "exit_code": code}))
    sys.exit(code if code else EXIT_USAGE)
