"""Idle workspaces: last activity in the list, `stop idle`, and `start user`."""

import json
import time

import pytest
from helpers import new_email, run_cli

from platformctl.commands.lifecycle import parse_duration
from platformctl.errors import InputError

HEARTBEAT = "/home/coder/.local/share/code-server/heartbeat"


def add(site) -> dict:
    result = run_cli(site, "add", "user", new_email(), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def container_of(client, site, alias: str):
    return client.containers.get(f"{site.workspace.name_prefix}-{alias}")


def beat(container, when: str) -> None:
    """Make the workspace's code-server look last used at `when`."""
    command = f"mkdir -p $(dirname {HEARTBEAT}) && touch -d '{when}' {HEARTBEAT}"
    assert container.exec_run(["sh", "-c", command]).exit_code == 0


def test_stop_idle_stops_only_the_idle_and_start_brings_one_back(site, docker_client):
    idle, busy, suspended = add(site), add(site), add(site)
    assert run_cli(site, "suspend", "user", suspended["alias"]).returncode == 0
    started = container_of(docker_client, site, busy["alias"])
    beat(container_of(docker_client, site, idle["alias"]), "2020-01-01 00:00")
    beat(started, time.strftime("%Y-%m-%d %H:%M:%S"))

    listed = {
        row["alias"]: row
        for row in json.loads(run_cli(site, "list", "users", "--json").stdout)
    }
    assert (
        listed[idle["alias"]]["last_activity"] < listed[busy["alias"]]["last_activity"]
    )
    assert listed[suspended["alias"]]["last_activity"] is None

    # The last activity is the later of the heartbeat and the container's start,
    # so a workspace started a moment ago is not idle yet: wait past --after.
    time.sleep(3)
    beat(started, time.strftime("%Y-%m-%d %H:%M:%S"))
    result = run_cli(site, "stop", "idle", "--after", "2s", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"stopped": [idle["alias"]]}
    assert container_of(docker_client, site, idle["alias"]).status == "exited"
    assert container_of(docker_client, site, busy["alias"]).status == "running"

    again = run_cli(site, "start", "user", idle["alias"], "--json")

    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["started"] is True
    assert json.loads(again.stdout)["workspace_url"] == idle["workspace_url"]
    assert container_of(docker_client, site, idle["alias"]).status == "running"


def test_a_fresh_unused_workspace_counts_from_its_start(site, docker_client):
    card = add(site)
    result = run_cli(site, "stop", "idle", "--after", "1h", "--json")
    assert json.loads(result.stdout) == {"stopped": []}
    assert container_of(docker_client, site, card["alias"]).status == "running"


def test_start_user_refuses_a_suspended_learner(site):
    card = add(site)
    run_cli(site, "suspend", "user", card["alias"])
    result = run_cli(site, "start", "user", card["alias"])
    assert result.returncode == 2
    assert "resume user" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("1d", 86400)],
)
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "2", "two hours", "2x", "-1h", "1h 2"])
def test_bad_durations_are_refused(text):
    with pytest.raises(InputError, match="is not a duration"):
        parse_duration(text)
