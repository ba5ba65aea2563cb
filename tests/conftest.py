"""Real services for the tests: a throwaway PostgreSQL cluster, the Docker Engine
with a locally built stand-in workspace image, and the Gitea stand-in.

Everything a test makes carries a prefix unique to this run, and the session
sweeps it away at the end. A failing test shows the services' logs.
"""

import glob
import io
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg2
import pytest
from gitea_standin import SPEC_ENV, GiteaStandin, spec_location
from psycopg2 import sql
from psycopg2.extensions import encrypt_password

from platformctl import config as configuration
from platformctl.config import (
    Config,
    GiteaSettings,
    PostgresSettings,
    SiteSettings,
    WorkspaceSettings,
)

REPO = Path(__file__).resolve().parents[1]
RUN_ID = secrets.token_hex(3)
PREFIX = f"pctltest{RUN_ID}"
STANDIN_IMAGE = "platformctl-test/workspace-standin:latest"
ADMIN_ROLE = "platformctl_admin"
LEARNER_GROUP = "platformctl_learners"
GITEA_ADMIN_TOKEN = f"standin-admin-{RUN_ID}"


def pytest_sessionstart(session: pytest.Session) -> None:
    if not spec_location().is_file():
        pytest.exit(
            f"Gitea's API description is not at '{spec_location()}': the tests check"
            f" every Gitea request against it; set {SPEC_ENV} to its path",
            returncode=2,
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _postgres_bindir() -> Path:
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.exit(
            "PostgreSQL server binaries not found; run .ci/run or set PG_BINDIR"
        )
    return Path(found[-1]).parent


@dataclass
class Cluster:
    """A PostgreSQL cluster of the tests' own."""

    port: int
    socket_dir: str
    log_path: Path
    admin_password_file: Path

    def superuser(self, dbname: str = "postgres") -> "psycopg2.extensions.connection":
        conn = psycopg2.connect(
            host=self.socket_dir, port=self.port, user="postgres", dbname=dbname
        )
        conn.autocommit = True
        return conn

    def login(
        self, user: str, password: str, dbname: str
    ) -> "psycopg2.extensions.connection":
        """Log in over TCP as a learner would."""
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=password,
            dbname=dbname,
            connect_timeout=5,
        )
        conn.autocommit = True
        return conn

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # initdb refuses to run as root, so the cluster belongs to the postgres user.
    bindir = _postgres_bindir()
    base = Path(tempfile.mkdtemp(prefix="platformctl-pg-"))
    data = base / "data"
    log_path = base / "server.log"
    port = _free_port()
    run_as = {"user": "postgres"} if os.geteuid() == 0 else {}
    if run_as:
        shutil.chown(base, "postgres", "postgres")

    subprocess.run(
        [
            bindir / "initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        **run_as,
    )
    hba = data / "pg_hba.conf"
    rules = (
        "# the admin first: pg_hba takes the first line that matches\n"
        f"host all {ADMIN_ROLE} 127.0.0.1/32 scram-sha-256\n"
        "# learners may reach their own database only\n"
        f"host learners_{RUN_ID} +{LEARNER_GROUP} 127.0.0.1/32 scram-sha-256\n"
        f"host all +{LEARNER_GROUP} 127.0.0.1/32 reject\n"
        f"local all +{LEARNER_GROUP} reject\n"
    )
    hba.write_text(rules + hba.read_text())
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{base}'\nfsync = off\n"
            "full_page_writes = off\nsynchronous_commit = off\n"
        )
    subprocess.run(
        [bindir / "pg_ctl", "-D", data, "-l", log_path, "-w", "start"],
        check=True,
        capture_output=True,
        **run_as,
    )

    password_file = base / "admin-password"
    password = secrets.token_urlsafe(18)
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    cluster = Cluster(port, str(base), log_path, password_file)
    conn = cluster.superuser()
    with conn.cursor() as cursor:
        verifier = encrypt_password(password, ADMIN_ROLE, conn, "scram-sha-256")
        cursor.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB PASSWORD %s").format(
                sql.Identifier(ADMIN_ROLE)
            ),
            (verifier,),
        )
    conn.close()

    yield cluster

    subprocess.run(
        [bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
        capture_output=True,
        **run_as,
    )
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.exit(f"the Docker Engine does not answer ({exc}); run .ci/run first")

    yield client

    for container in client.containers.list(all=True, filters={"name": PREFIX}):
        container.remove(force=True)
    for volume in client.volumes.list(filters={"name": PREFIX}):
        volume.remove(force=True)
    for network in client.networks.list(names=[f"{PREFIX}-learners"]):
        network.remove()
    client.close()


@pytest.fixture(scope="session")
def standin_image(docker_client: object) -> str:
    subprocess.run(
        [REPO / "deploy/standin/build.sh", STANDIN_IMAGE],
        check=True,
        capture_output=True,
    )
    return STANDIN_IMAGE


@dataclass
class Caddy:
    """A Caddy of the tests' own: its admin API and the port it serves on."""

    admin_url: str
    port: int


@pytest.fixture(scope="session")
def caddy() -> Iterator[Caddy]:
    import json
    import time
    import urllib.request

    if shutil.which("caddy") is None:
        pytest.exit("caddy is not installed; run .ci/run or apt-get install caddy")
    admin_port, port = _free_port(), _free_port()
    folder = Path(tempfile.mkdtemp(prefix="platformctl-caddy-"))
    initial = folder / "caddy.json"
    initial.write_text(
        json.dumps(
            {
                "admin": {
                    "listen": f"127.0.0.1:{admin_port}",
                    "config": {"persist": False},
                }
            }
        )
    )
    log_file = (folder / "caddy.log").open("w")
    process = subprocess.Popen(
        ["caddy", "run", "--config", str(initial)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "XDG_DATA_HOME": str(folder),
            "XDG_CONFIG_HOME": str(folder),
        },
    )
    admin_url = f"http://127.0.0.1:{admin_port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(admin_url + "/config/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)

    yield Caddy(admin_url, port)

    process.terminate()
    process.wait(timeout=10)
    log_file.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def broken_image(docker_client: object, standin_image: str) -> str:
    """An image whose workspace dies at once, saying why."""
    import docker

    assert isinstance(docker_client, docker.DockerClient)
    dockerfile = (
        f'FROM {standin_image}\nENTRYPOINT ["/bin/sh", "-c", "echo boom; exit 3"]\n'
    )
    tag = "platformctl-test/workspace-broken:latest"
    docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True
    )
    return tag


@pytest.fixture
def gitea() -> Iterator[GiteaStandin]:
    standin = GiteaStandin(admin_token=GITEA_ADMIN_TOKEN)
    standin.start()
    yield standin
    standin.stop()
    assert standin.violations == [], "requests that Gitea's API spec does not allow"


def make_config(
    directory: Path,
    cluster: Cluster,
    gitea: GiteaStandin | None = None,
    workspace: bool = True,
    image: str = STANDIN_IMAGE,
) -> Config:
    """A config for one test site, with databases of its own."""
    site_id = uuid.uuid4().hex[:8]
    gitea_settings = GiteaSettings(enabled=False)
    if gitea is not None:
        token_file = directory / "gitea-token"
        token_file.write_text(GITEA_ADMIN_TOKEN + "\n")
        token_file.chmod(0o600)
        gitea_settings = GiteaSettings(
            enabled=True, url=gitea.url, token_file=str(token_file), timeout=5.0
        )
    return Config(
        path=directory / "config.toml",
        site=SiteSettings(noreply_domain="noreply.test.invalid"),
        postgres=PostgresSettings(
            host="127.0.0.1",
            port=cluster.port,
            admin_user=ADMIN_ROLE,
            admin_password_file=str(cluster.admin_password_file),
            platform_database=f"platform_{RUN_ID}_{site_id}",
            learners_database=f"learners_{RUN_ID}",
            learner_group=LEARNER_GROUP,
        ),
        gitea=gitea_settings,
        workspace=WorkspaceSettings(
            enabled=workspace,
            name_prefix=f"{PREFIX}-{site_id}",
            network=f"{PREFIX}-learners",
            image=image,
            port_first=21000,
            port_last=21999,
            ready_timeout=20.0,
        ),
    )


@pytest.fixture
def site(
    tmp_path: Path, pg_cluster: Cluster, gitea: GiteaStandin, standin_image: str
) -> Config:
    """An initialized site with every service on: PostgreSQL, Gitea, workspaces."""
    from platformctl import setup

    config = make_config(tmp_path, pg_cluster, gitea)
    list(setup.initialize(config, write_config=True))
    return config


@pytest.fixture
def site_without_docker(
    tmp_path: Path, pg_cluster: Cluster, gitea: GiteaStandin
) -> Config:
    """An initialized site with PostgreSQL and Gitea, workspaces off."""
    from platformctl import setup

    config = make_config(tmp_path, pg_cluster, gitea, workspace=False)
    list(setup.initialize(config, write_config=True))
    return config


def with_changes(config: Config, **sections: dict[str, object]) -> Config:
    """A copy of config with some settings changed, written to its file."""
    for name, values in sections.items():
        config = replace(config, **{name: replace(getattr(config, name), **values)})
    configuration.write(config)
    return config


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    cluster = item.funcargs.get("pg_cluster") if hasattr(item, "funcargs") else None
    if cluster is not None:
        report.sections.append(("PostgreSQL log (last lines)", cluster.log_tail()))
    standin = item.funcargs.get("gitea") if hasattr(item, "funcargs") else None
    if standin is not None:
        calls = "\n".join(f"{m} {p}" for m, p, *_ in standin.requests[-20:])
        report.sections.append(("Gitea stand-in requests", calls))
