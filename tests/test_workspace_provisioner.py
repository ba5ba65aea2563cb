"""Workspace containers on the real Docker Engine, with the stand-in image."""

import json
import secrets
import urllib.request
from dataclasses import replace

import docker
import pytest
from conftest import PREFIX

from platformctl.config import WorkspaceSettings
from platformctl.credentials import new_password
from platformctl.errors import ConflictError, ServiceError
from platformctl.provisioners.workspace import LABEL_ALIAS, WorkspaceProvisioner


@pytest.fixture
def workspace(standin_image):
    settings = WorkspaceSettings(
        name_prefix=f"{PREFIX}-ws",
        network=f"{PREFIX}-learners",
        image=standin_image,
        port_first=22000,
        port_last=22099,
        ready_timeout=20.0,
        memory="256m",
        cpus=0.5,
        pids_limit=64,
    )
    return WorkspaceProvisioner(settings)


@pytest.fixture
def alias():
    return f"kind-otter-{secrets.randbelow(10000):04d}{secrets.token_hex(1)}"


def test_ensure_twice_starts_one_hardened_workspace_that_answers(
    workspace, alias, docker_client
):
    password = new_password()
    assert workspace.ensure(alias, password, files={".pgpass": "h:1:d:u:p\n"}) is True
    assert workspace.ensure(alias, password) is False

    container = docker_client.containers.get(workspace.container_name(alias))
    url = workspace.url(container)
    with urllib.request.urlopen(url + "healthz", timeout=5) as response:
        assert json.load(response)["status"] in ("alive", "expired")

    host = container.attrs["HostConfig"]
    assert container.labels[LABEL_ALIAS] == alias
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 64
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert container.attrs["Config"]["User"] == "1000:1000"
    assert not any("docker.sock" in m["Source"] for m in container.attrs["Mounts"])

    environment = container.attrs["Config"]["Env"]
    hashed = [line for line in environment if line.startswith("HASHED_PASSWORD=")]
    assert hashed and hashed[0].startswith("HASHED_PASSWORD=$argon2id$")
    assert not any(password in line for line in environment)

    listing = container.exec_run(["ls", "-ln", "/home/coder/.pgpass"]).output.decode()
    assert listing.startswith("-rw-------") and " 1000 " in listing


def test_remove_twice_takes_container_and_volume(workspace, alias, docker_client):
    workspace.ensure(alias, new_password())

    assert workspace.remove(alias) is True
    assert workspace.remove(alias) is False
    names = [c.name for c in docker_client.containers.list(all=True)]
    assert workspace.container_name(alias) not in names
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(workspace.volume_name(alias))


def test_container_of_the_same_name_not_made_by_us_is_untouched(
    workspace, alias, docker_client, standin_image
):
    stranger = docker_client.containers.create(
        standin_image, name=workspace.container_name(alias)
    )
    with pytest.raises(ConflictError, match="not made by platformctl"):
        workspace.ensure(alias, new_password())
    with pytest.raises(ConflictError):
        workspace.remove(alias)
    stranger.reload()
    assert stranger.status == "created"
    stranger.remove()


def test_workspace_that_does_not_come_up_leaves_nothing(
    workspace, alias, docker_client, broken_image
):
    broken = WorkspaceProvisioner(replace(workspace.settings, image=broken_image))
    with pytest.raises(ServiceError, match="stopped while starting.*boom"):
        broken.ensure(alias, new_password())

    names = [c.name for c in docker_client.containers.list(all=True)]
    assert broken.container_name(alias) not in names
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(broken.volume_name(alias))


def test_missing_image_is_reported_before_anything_is_made(workspace):
    missing = WorkspaceProvisioner(replace(workspace.settings, image="no/such:image"))
    with pytest.raises(ServiceError, match="'no/such:image' is not on this Docker"):
        missing.check()


def test_learners_get_different_ports(workspace, docker_client):
    first, second = (f"port-test-{secrets.token_hex(3)}" for _ in range(2))
    workspace.ensure(first, new_password())
    workspace.ensure(second, new_password())
    urls = {
        workspace.url(docker_client.containers.get(workspace.container_name(a)))
        for a in (first, second)
    }
    assert len(urls) == 2


def _address_on(container, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def _can_connect(source, address: str) -> bool:
    probe = source.exec_run(["sh", "-c", f"echo | nc -w 2 {address} 8080"])
    return probe.exit_code == 0


def test_learners_cannot_reach_each_other(workspace, docker_client, standin_image):
    first, second = (f"net-test-{secrets.token_hex(3)}" for _ in range(2))
    workspace.ensure(first, new_password())
    workspace.ensure(second, new_password())
    source = docker_client.containers.get(workspace.container_name(first))
    target = docker_client.containers.get(workspace.container_name(second))
    network = workspace.settings.network

    assert docker_client.networks.get(network).attrs["Options"] == {
        "com.docker.network.bridge.enable_icc": "false"
    }
    assert not _can_connect(source, _address_on(target, network))

    # The same probe does get through where traffic between containers is on,
    # so the refusal above is the network's doing.
    open_network = docker_client.networks.create(f"{PREFIX}-open", driver="bridge")
    try:
        open_network.connect(source)
        open_network.connect(target)
        assert _can_connect(source, _address_on(target, open_network.name))
    finally:
        open_network.disconnect(source)
        open_network.disconnect(target)
        open_network.remove()
