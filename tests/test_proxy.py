"""Addresses through Caddy: one route per learner, made at `add user`, gone at
`remove user`, against a real Caddy driven through its admin API."""

import json
import urllib.error
import urllib.request

import pytest
from conftest import with_changes
from helpers import new_email, run_cli

from platformctl import setup


def proxied(site, layout: str, caddy):
    config = with_changes(
        site,
        proxy={
            "enabled": True,
            "admin_url": caddy.admin_url,
            "layout": layout,
            "domain": "learn.test",
            "port": caddy.port,
        },
    )
    lines = list(setup.initialize(config, write_config=False))
    assert any(line.startswith("proxy       Caddy answers") for line in lines)
    return config


def add(config) -> dict:
    result = run_cli(config, "add", "user", new_email(), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def mark(docker_client, config, alias: str, when: str) -> int:
    """Give one learner's workspace a heartbeat of its own, to tell them apart."""
    container = docker_client.containers.get(f"{config.workspace.name_prefix}-{alias}")
    heartbeat = "/home/coder/.local/share/code-server/heartbeat"
    command = f"mkdir -p $(dirname {heartbeat}) && touch -d '{when}' {heartbeat}"
    assert container.exec_run(["sh", "-c", command]).exit_code == 0
    return int(container.exec_run(["stat", "-c", "%Y", heartbeat]).output) * 1000


def get(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_path_layout_routes_each_learner_to_their_own_workspace(
    site, caddy, docker_client
):
    config = proxied(site, "path", caddy)
    first, second = add(config), add(config)
    first_beat = mark(docker_client, config, first["alias"], "2021-01-01 10:00")
    second_beat = mark(docker_client, config, second["alias"], "2022-02-02 10:00")
    base = f"http://127.0.0.1:{caddy.port}"

    assert first["workspace_url"] == f"http://learn.test:{caddy.port}/{first['alias']}/"
    for card, beat in ((first, first_beat), (second, second_beat)):
        status, body = get(f"{base}/{card['alias']}/healthz")
        assert status == 200
        assert json.loads(body)["lastHeartbeat"] == beat
    assert get(f"{base}/no-such-learner-0000/healthz")[0] == 404

    listed = json.loads(run_cli(config, "list", "users", "--json").stdout)
    assert all(row["parts"]["proxy"] for row in listed)

    removed = run_cli(config, "remove", "user", first["alias"], "--yes")

    assert removed.returncode == 0, removed.stderr
    assert get(f"{base}/{first['alias']}/healthz")[0] == 404
    assert get(f"{base}/{second['alias']}/healthz")[0] == 200


def test_subdomain_layout_routes_by_host_name(site, caddy, docker_client):
    config = proxied(site, "subdomain", caddy)
    card = add(config)
    beat = mark(docker_client, config, card["alias"], "2023-03-03 10:00")

    status, body = get(
        f"http://127.0.0.1:{caddy.port}/healthz", host=f"{card['alias']}.learn.test"
    )

    assert card["workspace_url"] == f"http://{card['alias']}.learn.test:{caddy.port}/"
    assert status == 200 and json.loads(body)["lastHeartbeat"] == beat


def test_caddy_that_does_not_answer_stops_add_before_any_change(site, pg_cluster):
    config = with_changes(
        site, proxy={"enabled": True, "admin_url": "http://127.0.0.1:9", "port": 8081}
    )
    result = run_cli(config, "add", "user", new_email())
    assert result.returncode == 1
    assert "proxy: no answer from Caddy's admin API" in result.stderr
    conn = pg_cluster.superuser(site.postgres.platform_database)
    with conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM platformctl.learners")
        assert cursor.fetchone() == (0,)
    conn.close()


@pytest.mark.parametrize("layout", ["path", "subdomain"])
def test_cookie_scoping_only_in_path_layout(site, caddy, layout):
    from platformctl.provisioners.proxy import ProxyProvisioner

    config = proxied(site, layout, caddy)
    route = ProxyProvisioner(config.proxy)._route("kind-otter-0001", 20000)
    rules = json.dumps(route)
    assert ("Set-Cookie" in rules) == (layout == "path")


def test_doctor_finds_and_mends_a_missing_route(site, caddy):
    config = proxied(site, "path", caddy)
    card = add(config)
    base = f"http://127.0.0.1:{caddy.port}/{card['alias']}/healthz"
    from platformctl.provisioners.proxy import ProxyProvisioner

    ProxyProvisioner(config.proxy).remove(card["alias"])
    assert get(base)[0] == 404

    found = run_cli(config, "doctor", "--json")
    fixed = run_cli(config, "doctor", "--fix", "--json")

    # Other tests' learners share this Caddy and PostgreSQL group, and show up
    # here as orphans: look at this learner's findings only.
    assert found.returncode == 1
    mine = [
        (f["kind"], f["service"])
        for f in json.loads(found.stdout)["findings"]
        if f["alias"] == card["alias"]
    ]
    assert mine == [("gap", "proxy")]
    mended = [
        f for f in json.loads(fixed.stdout)["findings"] if f["alias"] == card["alias"]
    ]
    assert [f["fixed"] for f in mended] == [True]
    assert get(base)[0] == 200


def test_path_layout_sends_the_bare_address_to_its_slash(site, caddy):
    import http.client

    config = proxied(site, "path", caddy)
    card = add(config)
    connection = http.client.HTTPConnection("127.0.0.1", caddy.port, timeout=5)
    connection.request("GET", f"/{card['alias']}")
    answer = connection.getresponse()
    assert answer.status == 308
    assert answer.getheader("Location") == f"/{card['alias']}/"
    connection.close()
