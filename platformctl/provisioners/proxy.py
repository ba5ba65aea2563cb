"""The learner's address on the reverse proxy: one Caddy route per learner.

platformctl keeps a server of its own, named `platformctl`, in Caddy's config and
drives it through Caddy's admin API. Each learner's route carries the id
`platformctl-ALIAS`, by which it is found and removed. Two layouts:

- `subdomain`: https://ALIAS.DOMAIN/ goes to the learner's workspace;
- `path`: https://DOMAIN/ALIAS/ does, the prefix stripped on the way in. Every
  learner's login cookie is then scoped to their own path, so that learners
  behind one host name do not overwrite each other's.
"""

import fcntl
import functools
import hashlib
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from platformctl.config import ProxySettings
from platformctl.errors import NotFoundError, ServiceError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

SERVICE = "proxy"
SERVER = "platformctl"

R = TypeVar("R")


def _one_at_a_time(method: Callable[..., R]) -> Callable[..., R]:
    """Let one platformctl process at a time change Caddy's config.

    Caddy applies each change to the whole config and reloads; changes sent at
    the same moment can land on shifted routes, so they wait for each other here,
    through a lock file per admin API on this host.
    """

    @functools.wraps(method)
    def wrapper(self: "ProxyProvisioner", *args: Any, **kwargs: Any) -> R:
        digest = hashlib.sha256(self.admin.encode()).hexdigest()[:12]
        lock_path = Path(tempfile.gettempdir()) / f"platformctl-caddy-{digest}.lock"
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                return method(self, *args, **kwargs)
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    return wrapper


class ProxyProvisioner:
    """Learner routes on one Caddy server."""

    service = SERVICE

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.admin = settings.admin_url.rstrip("/")
        self._session: requests.Session | None = None

    @property
    def session(self) -> "requests.Session":
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def url(self, alias: str) -> str:
        """The address at which the learner opens the workspace."""
        scheme = "https" if self.settings.tls else "http"
        default = 443 if self.settings.tls else 80
        port = "" if self.settings.port == default else f":{self.settings.port}"
        if self.settings.layout == "subdomain":
            return f"{scheme}://{alias}.{self.settings.domain}{port}/"
        return f"{scheme}://{self.settings.domain}{port}/{alias}/"

    def close(self) -> None:
        """Let go of the connection to the service."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def check(self) -> None:
        """Raise ServiceError unless Caddy's admin API answers."""
        self._call("GET", "/config/", expect=(200,))

    @_one_at_a_time
    def prepare(self) -> bool:
        """Create platformctl's server in Caddy unless it exists.

        It answers 404 for any address that is no learner's.
        """
        # Caddy refuses to look below a key that does not exist, so look from
        # the top of the apps.
        listen = [f"{self.settings.bind_address}:{self.settings.port}"]
        apps = self._call("GET", "/config/apps", expect=(200,)).json() or {}
        servers = (apps.get("http") or {}).get("servers") or {}
        if SERVER in servers:
            if servers[SERVER].get("listen") == listen:
                return False
            path = f"/config/apps/http/servers/{SERVER}/listen"
            self._call("PATCH", path, json=listen, expect=(200,))
            log.info("proxy: Caddy server %s now listens on %s", SERVER, listen[0])
            return True

        server: dict[str, Any] = {
            "listen": listen,
            "routes": [
                {"handle": [{"handler": "static_response", "status_code": 404}]}
            ],
        }
        if not self.settings.tls:
            server["automatic_https"] = {"disable": True}
        if "http" not in apps:
            body: Any = {**apps, "http": {"servers": {SERVER: server}}}
            self._call("POST", "/config/apps", json=body, expect=(200,))
        elif "servers" not in apps["http"]:
            body = {**apps["http"], "servers": {SERVER: server}}
            self._call("POST", "/config/apps/http", json=body, expect=(200,))
        else:
            path = f"/config/apps/http/servers/{SERVER}"
            self._call("POST", path, json=server, expect=(200,))
        log.info(
            "proxy: created Caddy server %s on port %d", SERVER, self.settings.port
        )
        return True

    def exists(self, alias: str) -> bool:
        """Whether the learner has a route."""
        status = self._call("GET", f"/id/{route_id(alias)}", expect=(200, 404))
        return status.status_code == 200

    @_one_at_a_time
    def ensure(self, alias: str, password: str = "", upstream_port: int = 0) -> bool:
        """Route the learner's address to their workspace on upstream_port.

        An existing route is replaced when it points elsewhere.
        """
        route = self._route(alias, upstream_port)
        answer = self._call("GET", f"/id/{route_id(alias)}", expect=(200, 404))
        if answer.status_code == 200:
            if answer.json() == route:
                log.debug("proxy: route for %s exists already", alias)
                return False
            self._call("DELETE", f"/id/{route_id(alias)}", expect=(200, 404))

        # Learner routes go before the final 404 route.
        routes = f"/config/apps/http/servers/{SERVER}/routes/0"
        self._call("PUT", routes, json=route, expect=(200,))
        log.info("proxy: routed %s to port %d", self.url(alias), upstream_port)
        return True

    @_one_at_a_time
    def remove(self, alias: str) -> bool:
        """Take the learner's route away."""
        answer = self._call("DELETE", f"/id/{route_id(alias)}", expect=(200, 404))
        if answer.status_code == 404:
            log.debug("proxy: route for %s is already gone", alias)
            return False
        log.info("proxy: removed the route of %s", alias)
        return True

    def inventory(self) -> set[str]:
        """The aliases that have a route on platformctl's server."""
        path = f"/config/apps/http/servers/{SERVER}/routes"
        routes = self._call("GET", path, expect=(200,)).json() or []
        prefix = route_id("")
        return {
            route["@id"][len(prefix) :]
            for route in routes
            if str(route.get("@id", "")).startswith(prefix)
        }

    def _route(self, alias: str, upstream_port: int) -> dict[str, Any]:
        upstream: dict[str, Any] = {
            "handler": "reverse_proxy",
            "upstreams": [{"dial": f"{self.settings.upstream_host}:{upstream_port}"}],
        }
        if self.settings.layout == "subdomain":
            return {
                "@id": route_id(alias),
                "match": [{"host": [f"{alias}.{self.settings.domain}"]}],
                "handle": [upstream],
                "terminal": True,
            }

        prefix = f"/{alias}"
        upstream["headers"] = {
            "response": {
                "replace": {
                    "Set-Cookie": [
                        {
                            "search_regexp": "(?i)path=/([;]|$)",
                            "replace": f"Path={prefix}/$1",
                        }
                    ]
                }
            }
        }
        # Without its final slash the address would load the editor with every
        # relative link one folder too high: send the browser to the slash.
        to_slash = {
            "match": [{"path": [prefix]}],
            "handle": [
                {
                    "handler": "static_response",
                    "status_code": 308,
                    "headers": {"Location": [f"{prefix}/"]},
                }
            ],
        }
        proxied = {
            "handle": [
                {"handler": "rewrite", "strip_path_prefix": prefix},
                upstream,
            ]
        }
        return {
            "@id": route_id(alias),
            "match": [{"path": [prefix, f"{prefix}/*"]}],
            "handle": [{"handler": "subroute", "routes": [to_slash, proxied]}],
            "terminal": True,
        }

    def _call(
        self, method: str, path: str, expect: tuple[int, ...], **kwargs: Any
    ) -> "requests.Response":
        import requests

        try:
            try:
                answer = self.session.request(
                    method, self.admin + path, timeout=self.settings.timeout, **kwargs
                )
            except requests.ConnectionError:
                # Caddy restarts its admin listener when it loads a new config.
                time.sleep(0.3)
                answer = self.session.request(
                    method, self.admin + path, timeout=self.settings.timeout, **kwargs
                )
        except requests.RequestException as exc:
            raise ServiceError(
                SERVICE,
                f"no answer from Caddy's admin API at {self.admin}:"
                f" {type(exc).__name__}",
                "start caddy, or fix [proxy] admin_url",
            ) from None
        if answer.status_code in expect:
            return answer
        if answer.status_code == 404:
            raise NotFoundError(f"proxy: {method} {path} not found in Caddy's config")
        text = answer.text.strip().splitlines()
        raise ServiceError(
            SERVICE,
            f"Caddy answered {answer.status_code} to {method} {path}:"
            f" {text[0] if text else answer.reason}",
        )


def route_id(alias: str) -> str:
    """The id of the learner's route in Caddy's config."""
    return f"platformctl-{alias}"
