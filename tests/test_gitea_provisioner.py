"""The Gitea provisioner against Gitea's answers, replayed with `responses`."""

import base64
import json

import pytest
import requests
import responses

from platformctl.config import GiteaSettings
from platformctl.errors import ConflictError, ServiceError
from platformctl.provisioners.gitea import GiteaProvisioner

URL = "https://git.example.org"
API = URL + "/api/v1"
ALIAS = "hungry-owl-5231"
OURS = {"id": 7, "login": ALIAS, "email": f"{ALIAS}@noreply.example.org"}


@pytest.fixture
def gitea(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    settings = GiteaSettings(enabled=True, url=URL, token_file=str(token), timeout=3.0)
    return GiteaProvisioner(settings, "noreply.example.org")


@responses.activate
def test_creates_a_private_account(gitea):
    responses.get(f"{API}/users/{ALIAS}", status=404, json={"message": "not found"})
    created = responses.post(f"{API}/admin/users", status=201, json=OURS)

    assert gitea.ensure(ALIAS, "first-pass-word") is True

    body = json.loads(created.calls[0].request.body)
    assert body["username"] == ALIAS
    assert body["email"] == f"{ALIAS}@noreply.example.org"
    # The password change is asked for later, once the git token is made.
    assert body["must_change_password"] is False
    assert body["visibility"] == "private"
    assert body["password"] == "first-pass-word"
    assert created.calls[0].request.headers["Authorization"] == "token s3cret-token"


@responses.activate
def test_existing_account_of_ours_is_left_alone(gitea):
    responses.get(f"{API}/users/{ALIAS}", status=200, json=OURS)
    assert gitea.ensure(ALIAS, "pw-pw-pw-pw") is False
    assert [call.request.method for call in responses.calls] == ["GET"]


@responses.activate
def test_existing_account_of_someone_else_is_a_conflict(gitea):
    responses.get(
        f"{API}/users/{ALIAS}", json={**OURS, "email": "teacher@school.example"}
    )
    with pytest.raises(ConflictError, match="not made by platformctl"):
        gitea.ensure(ALIAS, "pw-pw-pw-pw")
    with pytest.raises(ConflictError):
        gitea.remove(ALIAS)
    assert all(call.request.method == "GET" for call in responses.calls)


@responses.activate
def test_taken_email_is_a_conflict(gitea):
    responses.get(f"{API}/users/{ALIAS}", status=404, json={"message": "not found"})
    responses.post(
        f"{API}/admin/users",
        status=422,
        json={"message": "e-mail already in use [email: x]", "url": API},
    )
    with pytest.raises(ConflictError, match="already in use"):
        gitea.ensure(ALIAS, "pw-pw-pw-pw")


@responses.activate
def test_weak_password_names_the_setting_to_change(gitea):
    responses.get(f"{API}/users/{ALIAS}", status=404, json={"message": "not found"})
    responses.post(
        f"{API}/admin/users", status=400, json={"message": "PasswordComplexity"}
    )
    with pytest.raises(ServiceError, match="MIN_PASSWORD_LENGTH"):
        gitea.ensure(ALIAS, "pw")


@responses.activate
def test_reserved_name_is_reported_with_gitea_message(gitea):
    responses.get(f"{API}/users/{ALIAS}", status=404, json={"message": "not found"})
    responses.post(
        f"{API}/admin/users", status=422, json={"message": "name is reserved [name: x]"}
    )
    with pytest.raises(ServiceError, match="name is reserved"):
        gitea.ensure(ALIAS, "pw-pw-pw-pw")


@responses.activate
def test_check_refuses_a_token_without_admin_rights(gitea):
    responses.get(f"{API}/user", json={"login": "teacher", "is_admin": False})
    with pytest.raises(ServiceError, match="'teacher', who is not a Gitea admin"):
        gitea.check()


@responses.activate
def test_check_reports_a_refused_token(gitea):
    responses.get(f"{API}/user", status=401, json={"message": "invalid token"})
    with pytest.raises(ServiceError, match="refused the token"):
        gitea.check()


@responses.activate
def test_unreachable_gitea_is_one_line_without_the_token(gitea):
    responses.get(f"{API}/user", body=requests.ConnectTimeout("timed out"))
    with pytest.raises(ServiceError) as caught:
        gitea.check()
    assert "no answer from https://git.example.org" in str(caught.value)
    assert "s3cret" not in str(caught.value)


@responses.activate
def test_every_call_has_a_timeout(gitea, monkeypatch):
    seen = []
    original = requests.Session.request

    def spy(self, method, url, **kwargs):
        seen.append(kwargs.get("timeout"))
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    responses.get(f"{API}/users/{ALIAS}", status=404, json={"message": "not found"})
    responses.post(f"{API}/admin/users", status=201, json=OURS)
    gitea.ensure(ALIAS, "pw-pw-pw-pw")
    assert seen == [3.0, 3.0]


@responses.activate
def test_remove_purges_and_a_missing_account_is_done(gitea):
    responses.get(f"{API}/users/{ALIAS}", json=OURS)
    deleted = responses.delete(f"{API}/admin/users/{ALIAS}", status=204)
    assert gitea.remove(ALIAS) is True
    assert "purge=true" in deleted.calls[0].request.url

    responses.replace(
        responses.GET, f"{API}/users/{ALIAS}", status=404, json={"message": "x"}
    )
    assert gitea.remove(ALIAS) is False


@responses.activate
def test_an_answer_that_is_not_gitea_json_is_one_service_error(gitea):
    responses.get(f"{API}/user", body="<html>proxy login</html>", status=200)
    with pytest.raises(ServiceError, match="not JSON"):
        gitea.check()
    responses.replace(responses.GET, f"{API}/user", json=["not", "an", "object"])
    with pytest.raises(ServiceError, match="did not answer an object"):
        gitea.check()


@responses.activate
def test_git_token_is_made_with_the_learner_password_and_repository_scope(gitea):
    made = responses.post(
        f"{API}/users/{ALIAS}/tokens",
        status=201,
        json={"id": 1, "name": "workspace-git", "sha1": "f" * 40, "scopes": []},
    )

    token = gitea.create_git_token(ALIAS, "pw-pw-pw-pw")

    assert token == "f" * 40
    request = made.calls[0].request
    expected = base64.b64encode(f"{ALIAS}:pw-pw-pw-pw".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert json.loads(request.body)["scopes"] == ["write:repository"]


@responses.activate
def test_refused_git_token_is_a_service_error(gitea):
    responses.post(
        f"{API}/users/{ALIAS}/tokens",
        status=403,
        json={"message": "You must change your password. Change it at: x"},
    )
    with pytest.raises(ServiceError, match="must change your password"):
        gitea.create_git_token(ALIAS, "pw-pw-pw-pw")


def test_git_files_hold_the_token_for_the_gitea_host(gitea):
    files = gitea.git_files(ALIAS, "abc123")
    assert files[".git-credentials"] == f"https://{ALIAS}:abc123@git.example.org\n"
    assert "helper = store" in files[".gitconfig"]
    assert f"email = {ALIAS}@noreply.example.org" in files[".gitconfig"]
