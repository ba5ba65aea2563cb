"""Tests of the Gitea stand-in itself: its answers, its spec checks and its helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from gitea_standin import SPEC_ENV, GiteaStandin, spec_location
from jsonschema import Draft4Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4

ADMIN_TOKEN = "test-admin-token"
LEARNER_TOKEN = "test-learner-token"


@pytest.fixture
def gitea() -> Iterator[GiteaStandin]:
    """A running stand-in whose own answers must all match the spec."""
    with GiteaStandin(admin_token=ADMIN_TOKEN) as standin:
        yield standin
    assert standin.response_violations == []


def call(
    gitea: GiteaStandin,
    method: str,
    path: str,
    token: str | None = ADMIN_TOKEN,
    **kwargs: Any,
) -> requests.Response:
    """Send one API request, authenticated with `token` unless it is None."""
    headers = {"Authorization": f"token {token}"} if token else {}
    url = f"{gitea.url}/api/v1{path}"
    return requests.request(method, url, headers=headers, timeout=10, **kwargs)


def create(gitea: GiteaStandin, username: str, **fields: Any) -> requests.Response:
    """Create a user with a valid email and password unless told otherwise."""
    body = {
        "username": username,
        "email": f"{username.lower()}@example.com",
        "password": "correct-horse-battery",
        **fields,
    }
    return call(gitea, "POST", "/admin/users", json=body)


def edit_body(username: str, **fields: Any) -> dict[str, Any]:
    """A PATCH body with the two fields the spec requires of EditUserOption."""
    return {"source_id": 0, "login_name": username, **fields}


def user_schema_problems(document: Any) -> list[str]:
    """Validate a document against the spec's User, independently of the stand-in."""
    spec = json.loads(spec_location().read_text())
    registry: Registry[Any] = Registry().with_resource(
        "urn:spec", DRAFT4.create_resource(spec)
    )
    validator = Draft4Validator(
        {"$ref": "urn:spec#/definitions/User"}, registry=registry
    )
    problems = [error.message for error in validator.iter_errors(document)]

    # Gitea sends "username" beside "login" although the User definition omits it.
    known = set(spec["definitions"]["User"]["properties"]) | {"username"}
    problems += [f"unknown field {name!r}" for name in set(document) - known]
    return problems


def test_version_answers_1_27_1(gitea: GiteaStandin) -> None:
    response = call(gitea, "GET", "/version", token=None)

    assert response.status_code == 200
    assert response.json() == {"version": "1.27.1"}


def test_create_user_answers_201_with_a_valid_user(gitea: GiteaStandin) -> None:
    response = create(gitea, "Alice", full_name="Alice Liddell")

    assert response.status_code == 201
    document = response.json()
    assert user_schema_problems(document) == []
    assert document["login"] == "Alice"
    assert document["email"] == "alice@example.com"
    assert document["full_name"] == "Alice Liddell"
    assert document["is_admin"] is False
    assert gitea.users["alice"]["password"] == "correct-horse-battery"
    assert gitea.violations == []


def test_same_name_in_other_case_is_taken(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice").status_code == 201

    response = create(gitea, "ALICE", email="someone-else@example.com")

    assert response.status_code == 422
    assert response.json()["message"] == "user already exists [name: ALICE]"
    assert set(gitea.users) == {"platform-admin", "alice"}


def test_email_in_other_case_is_taken(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice").status_code == 201

    response = create(gitea, "bob", email="ALICE@Example.com")

    assert response.status_code == 422
    assert (
        response.json()["message"] == "e-mail already in use [email: ALICE@Example.com]"
    )
    assert "bob" not in gitea.users


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("admin", "name is reserved [name: admin]"),
        ("Explore", "name is reserved [name: explore]"),
        ("v2", "name is reserved [name: v2]"),
        ("alice.keys", "name pattern is not allowed [pattern: *.keys]"),
        ("alice.png", "name pattern is not allowed [pattern: *.png]"),
    ],
)
def test_reserved_names_are_refused(
    gitea: GiteaStandin, username: str, message: str
) -> None:
    response = create(gitea, username)

    assert response.status_code == 422
    assert response.json()["message"] == message
    assert username.lower() not in gitea.users


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("-alice", "[Username]: invalid username"),
        ("_alice", "[Username]: invalid username"),
        ("al--ice", "[Username]: invalid username"),
        ("al._ice", "[Username]: invalid username"),
        ("alice.", "[Username]: invalid username"),
        ("al ice", "[Username]: invalid username"),
        ("alïce", "[Username]: invalid username"),
        ("a" * 41, "[Username]: MaxSize"),
    ],
)
def test_invalid_names_are_refused(
    gitea: GiteaStandin, username: str, message: str
) -> None:
    response = create(gitea, username, email="valid@example.com")

    assert response.status_code == 422
    assert response.json()["message"] == message
    assert gitea.violations == []


def test_names_at_the_edge_of_the_rules_are_accepted(gitea: GiteaStandin) -> None:
    for username in ("a", "9lives", "a-b_c.d", "x" * 40):
        assert create(gitea, username).status_code == 201, username


@pytest.mark.parametrize("password", [None, "", "seven77"])
def test_short_or_missing_password_answers_400(
    gitea: GiteaStandin, password: str | None
) -> None:
    fields = {} if password is None else {"password": password}
    body = {"username": "alice", "email": "alice@example.com", **fields}

    response = call(gitea, "POST", "/admin/users", json=body)

    assert response.status_code == 400
    assert response.json()["message"] == "PasswordIsRequired"
    assert "alice" not in gitea.users


def test_must_change_password_defaults_to_true(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice").status_code == 201
    assert create(gitea, "bob", must_change_password=False).status_code == 201

    assert gitea.users["alice"]["must_change_password"] is True
    assert gitea.users["bob"]["must_change_password"] is False


def test_body_without_email_is_a_violation(gitea: GiteaStandin) -> None:
    body = {"username": "alice", "password": "correct-horse-battery"}

    response = call(gitea, "POST", "/admin/users", json=body)

    assert response.status_code == 422
    assert response.json()["message"].startswith("stand-in:")
    assert len(gitea.violations) == 1
    assert "'email' is a required property" in gitea.violations[0]
    assert "alice" not in gitea.users


def test_field_of_wrong_type_is_a_violation(gitea: GiteaStandin) -> None:
    response = create(gitea, "alice", must_change_password="no")

    assert response.status_code == 422
    assert response.json()["message"].startswith("stand-in:")
    assert any("'no' is not of type 'boolean'" in v for v in gitea.violations)


def test_unknown_field_is_a_violation(gitea: GiteaStandin) -> None:
    response = create(gitea, "alice", is_admin=True)

    assert response.status_code == 422
    assert any("unknown property 'is_admin'" in v for v in gitea.violations)
    assert "alice" not in gitea.users


def test_patch_without_login_name_is_a_violation(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice").status_code == 201

    response = call(gitea, "PATCH", "/admin/users/alice", json={"prohibit_login": True})

    assert response.status_code == 422
    assert any("'login_name' is a required property" in v for v in gitea.violations)
    assert gitea.users["alice"]["prohibit_login"] is False


def test_unknown_query_parameter_is_a_violation(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice").status_code == 201
    gitea.add_repo("alice", "notes")

    response = call(gitea, "DELETE", "/admin/users/alice", params={"purg": "true"})

    assert response.status_code == 422
    assert any("'purg' is not in the spec" in v for v in gitea.violations)
    assert "alice" in gitea.users


def test_unknown_path_answers_404_and_is_a_violation(gitea: GiteaStandin) -> None:
    response = call(gitea, "GET", "/admin/learners")

    assert response.status_code == 404
    assert response.json()["message"].startswith("stand-in:")
    assert gitea.violations == ["GET /api/v1/admin/learners: path is not in the spec"]


def test_unknown_method_is_a_violation(gitea: GiteaStandin) -> None:
    response = call(gitea, "PUT", "/admin/users/alice", json={})

    assert response.status_code == 405
    assert len(gitea.violations) == 1


def test_spec_operation_without_handler_answers_501_quietly(
    gitea: GiteaStandin,
) -> None:
    response = call(gitea, "GET", "/repos/alice/notes")

    assert response.status_code == 501
    assert gitea.violations == []
    assert gitea.unimplemented == ["GET /repos/{owner}/{repo}"]
    assert gitea.requests[-1] == ("GET", "/api/v1/repos/alice/notes", {}, None)


def test_unknown_token_answers_401(gitea: GiteaStandin) -> None:
    response = call(gitea, "GET", "/user", token="no-such-token")

    assert response.status_code == 401
    assert response.json()["message"] == "invalid username, password or token"


def test_missing_token_on_admin_users_answers_401(gitea: GiteaStandin) -> None:
    response = call(gitea, "GET", "/admin/users", token=None)

    assert response.status_code == 401
    assert response.json()["message"] == "token is required"


def test_bearer_token_is_accepted(gitea: GiteaStandin) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    response = requests.get(f"{gitea.url}/api/v1/user", headers=headers, timeout=10)

    assert response.status_code == 200
    assert response.json()["login"] == "platform-admin"
    assert response.json()["is_admin"] is True


def test_non_admin_token_on_admin_users_answers_403(gitea: GiteaStandin) -> None:
    gitea.add_token(LEARNER_TOKEN, "learner", is_admin=False)

    listing = call(gitea, "GET", "/admin/users", token=LEARNER_TOKEN)
    creation = create_as(gitea, LEARNER_TOKEN, "mallory")

    assert listing.status_code == 403
    assert listing.json()["message"] == "user should be the site admin"
    assert creation.status_code == 403
    assert "mallory" not in gitea.users


def create_as(gitea: GiteaStandin, token: str, username: str) -> requests.Response:
    """Try to create a user with another token than the administrator's."""
    body = {
        "username": username,
        "email": f"{username}@example.com",
        "password": "correct-horse-battery",
    }
    return call(gitea, "POST", "/admin/users", token=token, json=body)


def test_token_of_user_who_must_change_password_answers_403(
    gitea: GiteaStandin,
) -> None:
    assert create(gitea, "alice").status_code == 201
    gitea.add_token(LEARNER_TOKEN, "alice", is_admin=False)

    response = call(gitea, "GET", "/user", token=LEARNER_TOKEN)

    assert response.status_code == 403
    assert response.json()["message"].startswith("You must change your password.")


def test_delete_of_repository_owner_needs_purge(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice").status_code == 201
    gitea.add_repo("alice", "notes")
    uid = gitea.users["alice"]["id"]

    refused = call(gitea, "DELETE", "/admin/users/alice")
    purged = call(gitea, "DELETE", "/admin/users/Alice", params={"purge": "true"})

    assert refused.status_code == 422
    assert refused.json()["message"] == (
        f"user still has ownership of repositories [uid: {uid}]"
    )
    assert purged.status_code == 204
    assert purged.content == b""
    assert "alice" not in gitea.users


def test_delete_of_user_without_repositories_answers_204(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice").status_code == 201

    response = call(gitea, "DELETE", "/admin/users/alice")

    assert response.status_code == 204
    assert "alice" not in gitea.users


def test_delete_of_missing_user_answers_404(gitea: GiteaStandin) -> None:
    response = call(gitea, "DELETE", "/admin/users/Nobody")

    assert response.status_code == 404
    assert response.json()["message"] == "user redirect does not exist [name: nobody]"
    assert gitea.violations == []


def test_admin_cannot_delete_themself(gitea: GiteaStandin) -> None:
    response = call(gitea, "DELETE", "/admin/users/platform-admin")

    assert response.status_code == 422
    assert response.json()["message"] == "you cannot delete yourself"


def test_patch_prohibit_login_is_stored(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice").status_code == 201

    body = edit_body("alice", prohibit_login=True)
    response = call(gitea, "PATCH", "/admin/users/alice", json=body)

    assert response.status_code == 200
    assert response.json()["prohibit_login"] is True
    assert gitea.users["alice"]["prohibit_login"] is True
    assert gitea.violations == []


def test_patch_changes_password_email_and_visibility(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice").status_code == 201

    body = edit_body(
        "alice",
        password="another-long-one",
        must_change_password=False,
        email="alice@school.example",
        visibility="private",
    )
    response = call(gitea, "PATCH", "/admin/users/alice", json=body)

    stored = gitea.users["alice"]
    assert response.status_code == 200
    assert stored["password"] == "another-long-one"
    assert stored["must_change_password"] is False
    assert stored["email"] == "alice@school.example"
    assert stored["visibility"] == "private"


def test_patch_with_empty_login_name_fails_binding(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice").status_code == 201

    body = edit_body("", prohibit_login=True)
    response = call(gitea, "PATCH", "/admin/users/alice", json=body)

    assert response.status_code == 422
    assert response.json()["message"] == "[LoginName]: Required"
    assert gitea.violations == []


def test_patch_with_short_password_answers_400(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice").status_code == 201

    body = edit_body("alice", password="short")
    response = call(gitea, "PATCH", "/admin/users/alice", json=body)

    assert response.status_code == 400
    assert response.json()["message"] == "password must be at least 8 characters"
    assert gitea.users["alice"]["password"] == "correct-horse-battery"


def test_patch_of_missing_user_answers_404(gitea: GiteaStandin) -> None:
    body = edit_body("nobody", prohibit_login=True)

    response = call(gitea, "PATCH", "/admin/users/nobody", json=body)

    assert response.status_code == 404


def test_get_user_ignores_case_and_answers_404_when_missing(
    gitea: GiteaStandin,
) -> None:
    assert create(gitea, "Alice").status_code == 201

    found = call(gitea, "GET", "/users/ALICE")
    missing = call(gitea, "GET", "/users/bob")

    assert found.status_code == 200
    assert found.json()["login"] == "Alice"
    assert missing.status_code == 404


def test_private_user_is_hidden_from_other_users(gitea: GiteaStandin) -> None:
    assert create(gitea, "alice", visibility="private").status_code == 201
    gitea.add_token(LEARNER_TOKEN, "bob", is_admin=False)

    as_admin = call(gitea, "GET", "/users/alice")
    as_bob = call(gitea, "GET", "/users/alice", token=LEARNER_TOKEN)

    assert as_admin.status_code == 200
    assert as_bob.status_code == 404


def test_list_users_pages_and_counts(gitea: GiteaStandin) -> None:
    for username in ("carol", "alice", "bob"):
        assert create(gitea, username).status_code == 201

    first = call(gitea, "GET", "/admin/users", params={"limit": 2})
    second = call(gitea, "GET", "/admin/users", params={"limit": 2, "page": 2})

    assert [u["login"] for u in first.json()] == ["alice", "bob"]
    assert [u["login"] for u in second.json()] == ["carol", "platform-admin"]
    assert first.headers["X-Total-Count"] == "4"
    assert second.headers["X-Total-Count"] == "4"
    assert 'rel="next"' in first.headers["Link"]
    assert 'rel="prev"' in second.headers["Link"]


def test_list_users_clamps_the_page_size_to_50(gitea: GiteaStandin) -> None:
    for number in range(55):
        assert create(gitea, f"learner{number:02d}").status_code == 201

    response = call(gitea, "GET", "/admin/users", params={"limit": 500})

    assert len(response.json()) == 50
    assert response.headers["X-Total-Count"] == "56"


def test_list_users_with_non_integer_page_is_a_violation(gitea: GiteaStandin) -> None:
    response = call(gitea, "GET", "/admin/users", params={"page": "two"})

    assert response.status_code == 422
    assert any("'page' must be an integer" in v for v in gitea.violations)


def test_fail_next_injects_once(gitea: GiteaStandin) -> None:
    gitea.fail_next("POST", r"/admin/users$", 500, "database is locked")

    failed = create(gitea, "alice")
    succeeded = create(gitea, "alice")

    assert failed.status_code == 500
    assert failed.json()["message"] == "database is locked"
    assert "url" in failed.json()
    assert succeeded.status_code == 201


def test_fail_next_leaves_other_requests_alone(gitea: GiteaStandin) -> None:
    gitea.fail_next("DELETE", r"/admin/users/", 500)

    created = create(gitea, "alice")
    deleted = call(gitea, "DELETE", "/admin/users/alice")

    assert created.status_code == 201
    assert deleted.status_code == 500
    assert deleted.json()["message"] == "injected failure"
    assert "alice" in gitea.users


def test_requests_are_recorded(gitea: GiteaStandin) -> None:
    create(gitea, "alice")
    call(gitea, "GET", "/admin/users", params={"limit": "5"})

    assert gitea.requests[0][:3] == ("POST", "/api/v1/admin/users", {})
    assert gitea.requests[0][3]["username"] == "alice"
    assert gitea.requests[1] == ("GET", "/api/v1/admin/users", {"limit": "5"}, None)


def test_spec_path_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = json.loads(spec_location().read_text())
    spec["paths"] = {"/version": spec["paths"]["/version"]}
    small = tmp_path / "swagger.json"
    small.write_text(json.dumps(spec))
    monkeypatch.setenv(SPEC_ENV, str(small))

    with GiteaStandin(admin_token=ADMIN_TOKEN) as standin:
        response = call(standin, "GET", "/admin/users")

    assert response.status_code == 404
    assert standin.violations == ["GET /api/v1/admin/users: path is not in the spec"]
