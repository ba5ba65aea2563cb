"""`platformctl init`: config, site key, databases, and the checks of each service."""

import json
import stat
import tomllib

from conftest import ADMIN_ROLE, GITEA_ADMIN_TOKEN, make_config
from helpers import new_email, run_cli

from platformctl import config as configuration


def new_site(tmp_path, cluster, gitea):
    """A config file naming databases of this test's own, as an operator would
    write before running init."""
    config = make_config(tmp_path, cluster, gitea, workspace=False)
    configuration.write(config)
    return config


def init_args(cluster, gitea_url: str | None, token_file: str | None) -> list[str]:
    args = [
        "init",
        "--pg-host",
        "127.0.0.1",
        "--pg-port",
        str(cluster.port),
        "--pg-admin-user",
        ADMIN_ROLE,
        "--pg-admin-password-file",
        str(cluster.admin_password_file),
        "--no-workspace",
    ]
    if gitea_url:
        args += ["--gitea-url", gitea_url, "--gitea-token-file", token_file or ""]
    else:
        args.append("--no-gitea")
    return args


def test_init_writes_a_private_config_and_key_and_is_safe_to_repeat(
    tmp_path, pg_cluster, gitea
):
    config = new_site(tmp_path, pg_cluster, gitea)
    args = init_args(pg_cluster, gitea.url, config.gitea.token_file)

    first = run_cli(config, *args)
    second = run_cli(config, *args)

    assert first.returncode == 0, first.stderr
    assert "site key    created" in first.stdout
    assert "token is an admin's" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "site key    present" in second.stdout
    written = tomllib.loads(config.path.read_text())
    assert written["postgres"]["port"] == pg_cluster.port
    assert written["gitea"]["enabled"] is True
    assert written["workspace"]["enabled"] is False
    for path in (config.path, config.secret_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = config.path.read_text()
    assert GITEA_ADMIN_TOKEN not in text
    assert pg_cluster.admin_password_file.read_text().strip() not in text


def test_init_refuses_a_new_key_for_a_registry_made_with_another(
    tmp_path, pg_cluster, gitea
):
    config = new_site(tmp_path, pg_cluster, gitea)
    args = init_args(pg_cluster, gitea.url, config.gitea.token_file)
    assert run_cli(config, *args).returncode == 0
    email = new_email()
    alias = json.loads(run_cli(config, "add", "user", email, "--json").stdout)["alias"]
    original = config.secret_path.read_bytes()

    config.secret_path.unlink()
    refused = run_cli(config, *args)

    assert refused.returncode == 2
    assert "restore that key from your backup" in refused.stderr
    assert not config.secret_path.exists()

    config.secret_path.write_text("ab" * 32 + "\n")
    config.secret_path.chmod(0o600)
    wrong = run_cli(config, "add", "user", email)
    assert wrong.returncode == 2
    assert "is not the one this registry was made with" in wrong.stderr

    config.secret_path.write_bytes(original)
    back = run_cli(config, "find", "user", email)
    assert back.stdout.strip() == alias


def test_init_stops_at_a_service_that_does_not_answer(tmp_path, pg_cluster, gitea):
    config = new_site(tmp_path, pg_cluster, gitea)
    args = init_args(pg_cluster, "http://127.0.0.1:9", config.gitea.token_file)

    result = run_cli(config, *args)

    assert result.returncode == 1
    assert "gitea: no answer from http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_init_with_gitea_on_but_no_token_file_is_a_usage_error(tmp_path, pg_cluster):
    config = make_config(tmp_path, pg_cluster, workspace=False)
    result = run_cli(config, "init", "--gitea-url", "https://git.example.org")
    assert result.returncode == 2
    assert "--gitea-token-file" in result.stderr
    assert not config.path.exists()
