"""The real workspace image end to end: a learner made by platformctl logs in to
code-server and gets the editor, in a container that has the tools the README
promises and no way to become root.

Opt-in: the image takes about 8 minutes to build the first time, so these tests
run only when it is already in the local Docker Engine.
"""

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest
import requests
from conftest import make_config
from helpers import new_email, run_cli, site_containers

from platformctl import setup
from platformctl.config import Config

REAL_IMAGE = "platformctl/workspace:offline"
# code-server answers /healthz about 4 s after the container starts; the default of
# the tests' config is meant for the stand-in.
READY_TIMEOUT = 90.0

pytestmark = pytest.mark.real_workspace


@pytest.fixture(scope="session")
def real_image() -> Iterator[str]:
    """The real image's tag; skips the test when the image is not here."""
    import docker

    try:
        client = docker.from_env()
    except docker.errors.DockerException as exc:
        pytest.skip(f"the Docker Engine does not answer ({exc})")
    try:
        client.images.get(REAL_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(
            f"image {REAL_IMAGE} is not in the local Docker Engine; build it with"
            " deploy/workspace-offline/build.sh (about 8 minutes the first time)"
        )
    finally:
        client.close()
    yield REAL_IMAGE


@pytest.fixture
def real_site(real_image, tmp_path, pg_cluster, gitea) -> Config:
    """An initialized site whose workspaces run the real image."""
    config = make_config(tmp_path, pg_cluster, gitea, image=real_image)
    config = replace(
        config, workspace=replace(config.workspace, ready_timeout=READY_TIMEOUT)
    )
    list(setup.initialize(config, write_config=True))
    return config


def test_a_learner_logs_in_and_gets_the_editor(real_site, docker_client):
    email = new_email()

    result = run_cli(real_site, "add", "user", email, "--json")

    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    assert card["created"] is True
    url, password = card["workspace_url"], card["passwords"]["workspace"]

    with requests.Session() as browser:
        unknown = browser.get(url, allow_redirects=False, timeout=10)
        assert unknown.status_code == 302
        assert "login" in unknown.headers["Location"]

        wrong = browser.post(
            url + "login",
            data={"password": "not-it"},
            allow_redirects=False,
            timeout=10,
        )
        assert wrong.status_code == 200
        assert "code-server-session" not in browser.cookies

        login = browser.post(
            url + "login",
            data={"password": password},
            allow_redirects=False,
            timeout=10,
        )
        assert login.status_code == 302
        assert "code-server-session" in login.cookies

        editor = browser.get(url, timeout=30)
        assert editor.status_code == 200
        assert "workbench.js" in editor.text

    again = run_cli(real_site, "add", "user", email, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["created"] is False


def test_the_workspace_has_the_tools_and_no_root(real_site, docker_client):
    result = run_cli(real_site, "add", "user", new_email(), "--json")
    assert result.returncode == 0, result.stderr
    [container] = site_containers(docker_client, real_site)

    def run(*command: str) -> tuple[int, str]:
        code, output = container.exec_run(list(command))
        return code, output.decode(errors="replace").strip()

    assert run("id", "-u") == (0, "1000")
    assert run("sh", "-c", "command -v sudo")[0] != 0
    expected = {
        ("python3", "--version"): "Python 3.",
        ("go", "version"): "go version go1.",
        ("git", "--version"): "git version ",
        ("psql", "--version"): "psql (PostgreSQL) ",
    }
    for command, start in expected.items():
        code, output = run(*command)
        assert code == 0, f"{' '.join(command)}: {output}"
        assert output.startswith(start), f"{' '.join(command)}: {output}"
