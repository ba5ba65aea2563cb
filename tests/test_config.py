"""Reading and writing the config file."""

import re
import stat

import pytest

from platformctl import config as configuration
from platformctl.errors import ConfigError


def test_written_config_reads_back_the_same(tmp_path):
    original = configuration.Config(path=tmp_path / "sub" / "config.toml")
    configuration.write(original)
    assert configuration.load(original.path) == original
    assert stat.S_IMODE(original.path.stat().st_mode) == 0o600


def test_missing_file_says_to_run_init(tmp_path):
    with pytest.raises(ConfigError, match="run 'platformctl init'"):
        configuration.load(tmp_path / "none.toml")


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[postgres]\nhots = "db"\n')
    with pytest.raises(ConfigError, match="unknown key 'hots' in \\[postgres\\]"):
        configuration.load(path)


def test_wrong_type_is_named(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[postgres]\nport = "5432"\n')
    with pytest.raises(ConfigError, match="port = '5432'.* should be a whole number"):
        configuration.load(path)


def test_broken_toml_is_one_line(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[postgres\n")
    with pytest.raises(ConfigError) as caught:
        configuration.load(path)
    assert "\n" not in str(caught.value)


def test_default_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert configuration.default_path() == tmp_path / "platformctl" / "config.toml"


def test_secret_file_must_be_private(tmp_path):
    path = tmp_path / "token"
    path.write_text("abc\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="can be read by others"):
        configuration.read_secret_file(str(path), "token", "[gitea] token_file")
    path.chmod(0o600)
    assert (
        configuration.read_secret_file(str(path), "token", "[gitea] token_file")
        == "abc"
    )


@pytest.mark.parametrize(
    ("section", "line", "expected"),
    [
        ("postgres", "port = 99999", "a port from 1 to 65535"),
        ("postgres", 'statement_timeout = "forever"', "a duration"),
        ("postgres", "connection_limit = -7", "-1 (no limit) or more"),
        ("postgres", 'learners_database = "platformctl"', "another database"),
        ("gitea", "timeout = 0", "a number of seconds above 0"),
        ("gitea", 'enabled = true\nurl = "git.example.org"', "http:// or https://"),
        ("workspace", 'memory = "lots"', "a size such as"),
        ("workspace", 'name_prefix = "bad name!"', "letters, digits"),
        ("workspace", "port_first = 30000\nport_last = 20000", "from port_first"),
    ],
)
def test_values_no_service_would_take_are_refused(tmp_path, section, line, expected):
    path = tmp_path / "config.toml"
    path.write_text(f"[{section}]\n{line}\n")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        configuration.load(path)


def test_relative_file_names_count_from_the_config_folder(tmp_path, monkeypatch):
    path = tmp_path / "site" / "config.toml"
    path.parent.mkdir()
    path.write_text('[site]\nsecret_file = "keys/site.key"\n')
    monkeypatch.chdir(tmp_path)
    config = configuration.load(path)
    assert config.secret_path == tmp_path / "site" / "keys" / "site.key"


def test_only_the_first_line_of_a_secret_file_counts(tmp_path):
    path = tmp_path / "token"
    path.write_text("the-token\nsecond line\n")
    path.chmod(0o600)
    assert configuration.read_secret_file(str(path), "token", "key") == "the-token"
