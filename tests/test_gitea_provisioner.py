"""The Gitea provisioner against Gitea's answers, replayed with `responses`."""

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
def test_creates_a_private_account_that_must_change_its_password(gitea):
    responses.get(f"{API}/users/{ALIAS}", status=404, json={"message": "not found"})
    created = responses.post(f"{API}/admin/users", status=201, json=OURS)

    assert gitea.ensure(ALIAS, "first-pass-word") is True

    body = json.loads(created.calls[0].request.body)
    assert body["username"] == ALIAS
    assert body["email"] == f"{ALIAS}@noreply.example.org"
    assert body["must_change_password"] is True
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
