"""The learner's Gitea account, made through Gitea's admin REST API.

The account's user name is the alias and its email a made-up address under the
site's no-reply domain, so Gitea never learns who the learner is. That address is
also how platformctl recognises accounts it made.
"""

import logging
from typing import TYPE_CHECKING, Any

from platformctl.config import GiteaSettings, read_secret_file
from platformctl.errors import ConflictError, NotFoundError, ServiceError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

SERVICE = "gitea"
PAGE_SIZE = 50
GIT_TOKEN_NAME = "workspace-git"


class GiteaProvisioner:
    """Learner accounts on one Gitea server."""

    service = SERVICE

    def __init__(self, settings: GiteaSettings, noreply_domain: str) -> None:
        self.settings = settings
        self.noreply_domain = noreply_domain
        self.api = settings.url.rstrip("/") + "/api/v1"
        self._session: requests.Session | None = None

    @property
    def session(self) -> "requests.Session":
        if self._session is None:
            import requests

            token = read_secret_file(
                self.settings.token_file, "Gitea admin token", "[gitea] token_file"
            )
            self._session = requests.Session()
            self._session.headers["Authorization"] = f"token {token}"
            self._session.headers["Accept"] = "application/json"
            self._session.verify = self.settings.verify_tls
        return self._session

    def email_for(self, alias: str) -> str:
        """The made-up address that the learner's account carries."""
        return f"{alias}@{self.noreply_domain}"

    def close(self) -> None:
        """Let go of the connection to the service."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def check(self) -> None:
        """Raise ServiceError unless Gitea answers and the token is an admin's."""
        user = _json_object(self._call("GET", "/user", expect=(200,)))
        if not user.get("is_admin"):
            raise ServiceError(
                SERVICE,
                f"the token in '{self.settings.token_file}' belongs to"
                f" '{user.get('login')}', who is not a Gitea admin",
                "make a token for an admin user with the write:admin scope",
            )

    def find(self, alias: str) -> dict[str, Any] | None:
        """The account named alias, or None."""
        response = self._call("GET", f"/users/{alias}", expect=(200, 404))
        if response.status_code == 404:
            return None
        return _json_object(response)

    def exists(self, alias: str) -> bool:
        """Whether an account of that name exists (made by platformctl or not)."""
        return self.find(alias) is not None

    def ensure(self, alias: str, password: str) -> bool:
        """Create the learner's account unless it exists.

        The account is private and must change its password at first login.
        Raises ConflictError when the name or address is held by someone else.
        """
        user = self.find(alias)
        if user is not None:
            self._check_ours(alias, user)
            log.debug("gitea: account %s exists already", alias)
            return False

        body = {
            "username": alias,
            "email": self.email_for(alias),
            "password": password,
            # Set after the workspace's git token is made: Gitea refuses the
            # learner's own logins, and so making that token, until then.
            "must_change_password": False,
            "visibility": "private",
            "send_notify": False,
        }
        response = self._call("POST", "/admin/users", json=body, expect=(201, 400, 422))
        if response.status_code == 201:
            log.info("gitea: created account %s", alias)
            return True

        message = _message(response)
        if response.status_code == 400:
            raise ServiceError(
                SERVICE,
                f"Gitea refused the generated password: {message}",
                "relax PASSWORD_COMPLEXITY or MIN_PASSWORD_LENGTH in Gitea's app.ini",
            )
        if "already exists" in message or "already in use" in message:
            # Another run may have made it between our look and our create.
            user = self.find(alias)
            if user is not None and self._is_ours(user):
                return False
            raise ConflictError(
                SERVICE,
                f"account name or address for '{alias}' is taken: {message}",
                "remove or rename that Gitea account",
            )
        raise ServiceError(SERVICE, f"Gitea refused account '{alias}': {message}")

    def remove(self, alias: str) -> bool:
        """Delete the learner's account and everything it owns."""
        user = self.find(alias)
        if user is None:
            log.debug("gitea: account %s is already gone", alias)
            return False

        self._check_ours(alias, user)
        self._call(
            "DELETE",
            f"/admin/users/{alias}",
            params={"purge": "true"},
            expect=(204, 404),
        )
        log.info("gitea: deleted account %s", alias)
        return True

    def inventory(self) -> dict[str, dict[str, Any]]:
        """Every account platformctl made, by alias; Gitea pages at 50 at most."""
        accounts: dict[str, dict[str, Any]] = {}
        page = 1
        while True:
            response = self._call(
                "GET",
                "/admin/users",
                params={"page": page, "limit": PAGE_SIZE},
                expect=(200,),
            )
            users = _json(response)
            if not isinstance(users, list):
                raise ServiceError(SERVICE, "GET /admin/users did not answer a list")
            for user in users:
                if self._is_ours(user):
                    accounts[str(user["login"])] = user
            total = int(response.headers.get("X-Total-Count", 0))
            if len(users) < PAGE_SIZE or page * PAGE_SIZE >= total:
                return accounts
            page += 1

    def create_git_token(self, alias: str, password: str) -> str:
        """A token of the learner's own for git, with repository rights only.

        Gitea makes a user's tokens only with that user's password (basic auth),
        which works only while no password change is pending.
        """
        import requests

        url = f"{self.api}/users/{alias}/tokens"
        body = {"name": GIT_TOKEN_NAME, "scopes": ["write:repository"]}
        try:
            answer = requests.post(
                url,
                json=body,
                auth=(alias, password),
                timeout=self.settings.timeout,
                verify=self.settings.verify_tls,
            )
        except requests.RequestException as exc:
            raise ServiceError(
                SERVICE, f"no answer from {self.settings.url}: {type(exc).__name__}"
            ) from None
        if answer.status_code != 201:
            raise ServiceError(
                SERVICE,
                f"Gitea refused a git token for '{alias}': {_message(answer)}",
            )
        log.info("gitea: made a git token for %s", alias)
        return str(_json_object(answer)["sha1"])

    def require_password_change(self, alias: str) -> bool:
        """Make the learner choose a new password at the next login."""
        return self._edit(alias, "must_change_password", True)

    def git_files(self, alias: str, token: str) -> dict[str, str]:
        """Home files that let git in the workspace reach Gitea as the learner."""
        from urllib.parse import quote, urlsplit

        base = urlsplit(self.settings.workspace_url or self.settings.url)
        location = f"{base.scheme}://{quote(alias)}:{quote(token)}@{base.netloc}"
        config = (
            "[user]\n"
            f"\tname = {alias}\n"
            f"\temail = {self.email_for(alias)}\n"
            "[credential]\n"
            "\thelper = store\n"
            "[init]\n"
            "\tdefaultBranch = main\n"
        )
        return {".git-credentials": location + "\n", ".gitconfig": config}

    def suspend(self, alias: str) -> bool:
        """Lock the account: neither its password nor its tokens work any more."""
        return self._edit(alias, "prohibit_login", True)

    def resume(self, alias: str) -> bool:
        """Let the account log in again."""
        return self._edit(alias, "prohibit_login", False)

    def set_password(self, alias: str, password: str) -> None:
        """Give the account a new password, to be changed at the next login."""
        user = self._require_ours(alias)
        self._call(
            "PATCH",
            f"/admin/users/{alias}",
            json={
                **self._edit_identity(user),
                "password": password,
                "must_change_password": True,
            },
            expect=(200,),
        )
        log.info("gitea: new password for account %s", alias)

    def _edit(self, alias: str, field: str, value: Any) -> bool:
        user = self._require_ours(alias)
        if user.get(field) == value:
            log.debug("gitea: account %s has %s=%s already", alias, field, value)
            return False
        self._call(
            "PATCH",
            f"/admin/users/{alias}",
            json={**self._edit_identity(user), field: value},
            expect=(200,),
        )
        log.info("gitea: account %s now has %s=%s", alias, field, value)
        return True

    def _edit_identity(self, user: dict[str, Any]) -> dict[str, Any]:
        # Gitea's edit form insists on these two, even when they do not change.
        return {
            "source_id": int(user.get("source_id") or 0),
            "login_name": str(user.get("login_name") or user["login"]),
        }

    def _require_ours(self, alias: str) -> dict[str, Any]:
        user = self.find(alias)
        if user is None:
            raise NotFoundError(f"gitea: account '{alias}' does not exist")
        self._check_ours(alias, user)
        return user

    def _is_ours(self, user: dict[str, Any]) -> bool:
        email = str(user.get("email", "")).lower()
        return email == self.email_for(str(user.get("login", ""))).lower()

    def _check_ours(self, alias: str, user: dict[str, Any]) -> None:
        if not self._is_ours(user):
            raise ConflictError(
                SERVICE,
                f"account '{alias}' exists but was not made by platformctl",
                "rename that Gitea account or leave it alone",
            )

    def _call(
        self, method: str, path: str, expect: tuple[int, ...], **kwargs: Any
    ) -> "requests.Response":
        import requests

        url = self.api + path
        try:
            response = self.session.request(
                method, url, timeout=self.settings.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise ServiceError(
                SERVICE,
                f"no answer from {self.settings.url}: {type(exc).__name__}",
                "check that Gitea runs and [gitea] url is right",
            ) from None

        if response.status_code in expect:
            return response
        if response.status_code == 401:
            raise ServiceError(
                SERVICE,
                f"Gitea refused the token in '{self.settings.token_file}'",
                "make a new admin token and put it in that file",
            )
        if response.status_code == 403:
            raise ServiceError(
                SERVICE,
                f"{method} {path} is forbidden for this token: {_message(response)}",
                "use a token of an admin user with the write:admin scope",
            )
        raise ServiceError(
            SERVICE,
            f"{method} {path} answered {response.status_code}: {_message(response)}",
        )


def _json(response: "requests.Response") -> Any:
    """The JSON body of an answer; ServiceError when it is something else."""
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "no content type")
        raise ServiceError(
            SERVICE,
            f"{response.request.method} {response.url} answered {kind}, not JSON",
            "check that [gitea] url points at Gitea itself",
        ) from None


def _json_object(response: "requests.Response") -> dict[str, Any]:
    body = _json(response)
    if not isinstance(body, dict):
        raise ServiceError(
            SERVICE,
            f"{response.request.method} {response.url} did not answer an object",
        )
    return body


def _message(response: "requests.Response") -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(body)[:200]
