"""A stand-in for Gitea 1.27.1's REST API, for end-to-end tests.

No Gitea runs on the test machines, so this module serves the part of the API that
platformctl uses (users and their administration) from memory, on 127.0.0.1, and
checks every request against Gitea's own Swagger description. A request that does
not match the description is answered 422 with a message starting with "stand-in:"
and recorded in `violations`, so that a client bug fails a test instead of passing
silently. The stand-in's own answers are checked too; a mismatch there is a bug in
this module and is recorded in `response_violations`.

The status codes and message texts follow Gitea's source (routers/api/v1,
models/user, models/db, modules/validation and the binding library it uses).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from jsonschema import Draft4Validator, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT4

logger = logging.getLogger(__name__)

GITEA_VERSION = "1.27.1"
BASE_PATH = "/api/v1"
ADMIN_USERNAME = "platform-admin"
SPEC_ENV = "PLATFORMCTL_GITEA_SPEC"
DEFAULT_SPEC = (
    Path(__file__).resolve().parents[2] / "shared/reference/gitea/swagger.v1.json"
)

# Gitea's default MIN_PASSWORD_LENGTH is 8; PASSWORD_COMPLEXITY defaults to "off" and
# the "pwned" check to disabled, so length is the only password rule a stock Gitea
# applies.
MIN_PASSWORD_LENGTH = 8

# Gitea's API page sizes: DEFAULT_PAGING_NUM and MAX_RESPONSE_ITEMS.
DEFAULT_PAGE_SIZE = 30
MAX_PAGE_SIZE = 50

# The names from the project's reference notes, together with the rest of the list in
# Gitea's models/user/user.go; a name is compared after trimming and lower-casing.
RESERVED_NAMES = frozenset(
    """
    . .. .well-known admin api assets attachments avatar avatars captcha explore
    favicon.ico ghost gitea-actions issues login manifest.json metrics milestones new
    notifications org pulls repo repo-avatars robots.txt search sitemap.xml ssh_info
    swagger.v1.json user v2
    """.split()
)
RESERVED_SUFFIXES = (".keys", ".gpg", ".rss", ".atom", ".png")

# A username starts with a letter or digit and holds letters, digits, "-", "_" and
# "."; none of the last three may follow another or end the name.
_NAME_SHAPE = re.compile(r"[0-9A-Za-z][-.\w]*", re.ASCII)
_NAME_BAD_RUN = re.compile(r"[-._]{2,}|[-._]$")
_EMAIL_SHAPE = re.compile(
    r"[\w.!#$%&'*+/=?^`{|}~-]+@[0-9A-Za-z](?:[-0-9A-Za-z]*[0-9A-Za-z])?"
    r"(?:\.[0-9A-Za-z](?:[-0-9A-Za-z]*[0-9A-Za-z])?)+",
    re.ASCII,
)

# Go's strconv.ParseBool, which Gitea uses for boolean query parameters.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# Query parameters that every operation accepts through the security definitions.
_SECURITY_QUERY = frozenset({"token", "access_token", "sudo"})
_SPEC_URI = "urn:platformctl:gitea-swagger"
_VISIBILITIES = ("public", "limited", "private")

# Gitea's binding rules for the JSON bodies it decodes, in struct order: the first
# failing field decides the 422 message, "[Field]: Rule".
_Rule = str | tuple[str, int]
_CREATE_RULES: list[tuple[str, str, list[_Rule]]] = [
    ("username", "Username", ["Required", "Username", ("MaxSize", 40)]),
    ("full_name", "FullName", [("MaxSize", 100)]),
    ("email", "Email", ["Required", "Email", ("MaxSize", 254)]),
    ("password", "Password", [("MaxSize", 255)]),
]
_EDIT_RULES: list[tuple[str, str, list[_Rule]]] = [
    ("login_name", "LoginName", ["Required"]),
    ("password", "Password", [("MaxSize", 255)]),
    ("location", "Location", [("MaxSize", 50)]),
    ("description", "Description", [("MaxSize", 255)]),
]


class StoredUser(TypedDict):
    """One user as the stand-in keeps it."""

    id: int
    username: str
    email: str
    password: str
    full_name: str
    login_name: str
    source_id: int
    must_change_password: bool
    prohibit_login: bool
    visibility: str
    is_admin: bool
    active: bool
    restricted: bool
    location: str
    website: str
    description: str
    created: str
    repos: list[str]
    tokens: dict[str, list[str]]


@dataclass
class Reply:
    """An HTTP answer: status, JSON body (None for none) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Injection:
    method: str
    path: re.Pattern[str]
    status: int
    message: str


def _strict_validator(tolerated: frozenset[str]) -> Any:
    """Draft 4 validation that also reports properties a schema does not define.

    Gitea's definitions never set additionalProperties, and Gitea's JSON decoding
    drops unknown fields silently, so a misspelt field would pass unnoticed there.
    """
    check_properties = Draft4Validator.VALIDATORS["properties"]

    def properties(
        validator: Any,
        known: Mapping[str, Any],
        instance: Any,
        schema: Mapping[str, Any],
    ) -> Iterator[ValidationError]:
        yield from check_properties(validator, known, instance, schema)

        if not validator.is_type(instance, "object"):
            return
        if "additionalProperties" in schema or "patternProperties" in schema:
            return
        for name in instance:
            if name not in known and name not in tolerated:
                yield ValidationError(f"unknown property {name!r}")

    return validators.extend(Draft4Validator, {"properties": properties})


_REQUEST_VALIDATOR = _strict_validator(frozenset())

# Gitea adds "username", a copy of "login", to every User it returns, although the
# User definition does not list it.
_RESPONSE_VALIDATOR = _strict_validator(frozenset({"username"}))


# A path template: (how literal it is, its pattern, the template, its parameter names).
_Template = tuple[tuple[int, int], re.Pattern[str], str, list[str]]


def _pointer(*parts: str) -> str:
    """Build a JSON pointer into the spec, escaping each part."""
    escaped = (part.replace("~", "~0").replace("/", "~1") for part in parts)
    return "#/" + "/".join(escaped)


class SpecChecker:
    """Match requests and responses against Gitea's Swagger 2.0 document."""

    def __init__(self, spec: dict[str, Any]) -> None:
        """Index the spec's path templates and prepare a reference registry."""
        self.spec = spec
        self.registry: Registry[Any] = Registry().with_resource(
            _SPEC_URI, DRAFT4.create_resource(spec)
        )
        self._validators: dict[tuple[str, Any], Any] = {}
        self._templates: list[_Template] = []

        for template in spec["paths"]:
            names = re.findall(r"\{([^}]+)\}", template)
            pieces = re.split(r"\{[^}]+\}", template)
            pattern = "([^/]+)".join(re.escape(piece) for piece in pieces)
            literal = sum(1 for seg in template.split("/") if seg and "{" not in seg)
            score = (literal, len("".join(pieces)))
            self._templates.append((score, re.compile(pattern), template, names))

    def match(self, path: str) -> tuple[str, dict[str, str]] | None:
        """Find the template for a path below the base path, preferring literal ones.

        A parameter matches one path segment (or part of one, as in "{index}.{ext}").
        """
        best: tuple[tuple[int, int], str, dict[str, str]] | None = None
        for score, pattern, template, names in self._templates:
            found = pattern.fullmatch(path)
            if found is None or (best is not None and best[0] >= score):
                continue
            values = [unquote(value) for value in found.groups()]
            best = (score, template, dict(zip(names, values, strict=True)))
        return None if best is None else (best[1], best[2])

    def operation(self, template: str, method: str) -> dict[str, Any] | None:
        """Return the operation object for a template and method, if any."""
        found = self.spec["paths"][template].get(method.lower())
        return found if isinstance(found, dict) else None

    def check_request(
        self,
        template: str,
        method: str,
        path_params: Mapping[str, str],
        query: Mapping[str, list[str]],
        headers: Message,
        body: tuple[bool, Any],
    ) -> list[str]:
        """List every way a request departs from its operation in the spec.

        `body` is (sent, parsed value); an unparsable body is reported by the caller.
        """
        problems: list[str] = []
        params = list(self._parameters(template, method))
        sent, value = body

        for param, pointer in params:
            where, name = param["in"], param.get("name", "")
            if where == "path":
                problems += self._check_scalar(param, [path_params.get(name, "")])
            elif where == "query" and name in query:
                problems += self._check_scalar(param, query[name])
            elif where == "header" and name in headers:
                problems += self._check_scalar(param, headers.get_all(name) or [])
            elif where in ("query", "header") and param.get("required"):
                problems.append(f"required {where} parameter {name!r} is missing")
            elif where == "body":
                problems += self._check_body(param, pointer + "/schema", sent, value)

        declared = {p.get("name") for p, _ in params if p["in"] == "query"}
        for name in query:
            if name not in declared and name not in _SECURITY_QUERY:
                problems.append(f"query parameter {name!r} is not in the spec")

        if sent and not any(p["in"] == "body" for p, _ in params):
            problems.append("a body was sent but the operation takes none")
        return problems

    def check_response(
        self, template: str, method: str, status: int, body: Any
    ) -> list[str]:
        """List every way a response departs from the spec's response for it."""
        operation = self.operation(template, method) or {}
        responses = operation.get("responses", {})
        declared = responses.get(str(status), responses.get("default"))

        if declared is None:
            if 200 <= status < 300:
                return [f"status {status} is not declared"]
            return []
        if status == 204 and body is not None:
            return ["a 204 answer must have no body"]

        if "$ref" in declared:
            pointer = declared["$ref"] + "/schema"
            declared = self._resolve(declared)
        else:
            pointer = _pointer("paths", template, method.lower(), "responses")
            pointer += f"/{status}/schema"
        if "schema" not in declared:
            return []
        return self._schema_errors(pointer, body, _RESPONSE_VALIDATOR)

    def _parameters(
        self, template: str, method: str
    ) -> Iterator[tuple[dict[str, Any], str]]:
        """Yield the path's and the operation's parameters with their spec pointers."""
        operation = self.operation(template, method) or {}
        places = [
            (self.spec["paths"][template], _pointer("paths", template)),
            (operation, _pointer("paths", template, method.lower())),
        ]
        for owner, base in places:
            for index, param in enumerate(owner.get("parameters", [])):
                pointer = param.get("$ref") or f"{base}/parameters/{index}"
                yield self._resolve(param), pointer

    def _resolve(self, item: dict[str, Any]) -> dict[str, Any]:
        """Follow a local "$ref" to the object it names."""
        ref = item.get("$ref")
        if ref is None:
            return item
        resolved = self.registry.resolver(_SPEC_URI).lookup(ref).contents
        return dict(resolved)

    def _check_body(
        self, param: dict[str, Any], pointer: str, sent: bool, value: Any
    ) -> list[str]:
        if sent:
            return self._schema_errors(pointer, value, _REQUEST_VALIDATOR)

        schema = self._resolve(param.get("schema", {}))
        if param.get("required") or schema.get("required"):
            return ["the operation needs a JSON body and none was sent"]
        return []

    def _schema_errors(self, pointer: str, instance: Any, kind: Any) -> list[str]:
        """Validate against the schema at a pointer; `kind` is a validator class."""
        validator = self._validators.get((pointer, kind))
        if validator is None:
            schema = {"$ref": _SPEC_URI + pointer}
            validator = kind(schema, registry=self.registry)
            self._validators[(pointer, kind)] = validator

        errors = sorted(validator.iter_errors(instance), key=lambda e: e.json_path)
        return [f"body at {error.json_path}: {error.message}" for error in errors]

    @staticmethod
    def _check_scalar(param: dict[str, Any], raw: list[str]) -> list[str]:
        name, kind = param.get("name", ""), param.get("type", "string")
        values = raw
        if kind == "array":
            kind = param.get("items", {}).get("type", "string")
            if param.get("collectionFormat", "csv") == "csv":
                values = [part for value in raw for part in value.split(",")]

        problems = []
        for value in values:
            if kind == "integer" and not re.fullmatch(r"[-+]?\d+", value):
                problems.append(f"parameter {name!r} must be an integer, got {value!r}")
            elif kind == "boolean" and value not in _GO_TRUE | _GO_FALSE:
                problems.append(f"parameter {name!r} must be a boolean, got {value!r}")
            elif "enum" in param and value not in [str(v) for v in param["enum"]]:
                problems.append(f"parameter {name!r} must be one of {param['enum']}")
        return problems


def spec_location() -> Path:
    """Where Gitea's API description is read from: $PLATFORMCTL_GITEA_SPEC, or
    shared/reference/ beside the repository."""
    return Path(os.environ.get(SPEC_ENV) or DEFAULT_SPEC)


def _checker_for(spec_path: Path | None) -> SpecChecker:
    """The checker for the spec named by the argument, the environment or the repo."""
    chosen = spec_path or spec_location()
    return _checker_at(chosen.resolve())


@functools.cache
def _checker_at(path: Path) -> SpecChecker:
    # Parsing the 870 kB document takes a fifth of a second; tests start many
    # stand-ins, so each file is read once per process.
    with path.open(encoding="utf-8") as handle:
        return SpecChecker(json.load(handle))


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _go_bool(value: str | None) -> bool:
    """Read a query flag as Gitea does: anything unparsable is false."""
    return value in _GO_TRUE


def _binding_error(rules: list[tuple[str, str, list[_Rule]]], body: Any) -> str | None:
    """Apply Gitea's form binding rules and return its message for the first failure."""
    for key, field_name, field_rules in rules:
        value = body.get(key)
        for rule in field_rules:
            if _rule_fails(rule, value):
                label = rule[0] if isinstance(rule, tuple) else rule
                label = "invalid username" if label == "Username" else label
                return f"[{field_name}]: {label}"
    return None


def _rule_fails(rule: _Rule, value: Any) -> bool:
    """Tell whether one binding rule rejects a field's value."""
    if isinstance(rule, tuple):
        return isinstance(value, str) and len(value) > rule[1]
    if rule == "Required":
        return not value
    if rule == "Username":
        return not _valid_username(str(value or ""))
    return rule == "Email" and not _EMAIL_SHAPE.fullmatch(str(value or ""))


def _valid_username(name: str) -> bool:
    return bool(_NAME_SHAPE.fullmatch(name)) and not _NAME_BAD_RUN.search(name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, standin: GiteaStandin) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.standin = standin


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply = self.server.standin.handle(self.command, self.path, self.headers, raw)
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()

        self.send_response(reply.status)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("gitea stand-in: " + format, *args)


_Endpoint = Callable[["GiteaStandin", StoredUser | None, dict[str, str], Any], Reply]


class GiteaStandin:
    """An in-memory Gitea 1.27.1 API on 127.0.0.1, checked against its Swagger spec.

    Use it as a context manager, or call `start()` and `stop()`. Requests go to
    `url + "/api/v1/..."` with `Authorization: token <token>`; `admin_token` belongs
    to the site administrator `platform-admin`.
    """

    def __init__(
        self, admin_token: str = "standin-admin-token", spec_path: Path | None = None
    ) -> None:
        """Load the spec and create the administrator; the server starts later."""
        self.checker = _checker_for(spec_path)
        self.users: dict[str, StoredUser] = {}
        self.violations: list[str] = []
        self.response_violations: list[str] = []
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.unimplemented: list[str] = []
        self._tokens: dict[str, str] = {}
        self._token_scopes: dict[str, list[str]] = {}
        self._basic_auth = False
        self._injections: list[_Injection] = []
        self._next_id = 1
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.add_token(admin_token, ADMIN_USERNAME, is_admin=True)

    @property
    def url(self) -> str:
        """The server's root, such as http://127.0.0.1:PORT (without /api/v1)."""
        if self._server is None:
            raise RuntimeError("the Gitea stand-in is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> GiteaStandin:
        """Listen on a free port and serve requests from a background thread."""
        self._server = _Server(self)
        # A short poll interval lets stop() return quickly.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
        self._thread = threading.Thread(target=serve, name="gitea-standin", daemon=True)
        self._thread.start()
        logger.info("Gitea stand-in listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> GiteaStandin:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def add_token(self, token: str, username: str, is_admin: bool) -> None:
        """Register an API token for a user, creating the user when it is missing.

        A user created here need not change their password. One created through the
        API keeps its must_change_password flag, and Gitea refuses (403) every call
        made with a token of a user who must still change the password.
        """
        with self._lock:
            user = self.users.get(username.lower())
            if user is None:
                user = self._store_user(
                    username, f"{username.lower()}@example.com", "", {}
                )
                user["must_change_password"] = False
            user["is_admin"] = is_admin
            self._tokens[token] = username.lower()

    def token_owner(self, token: str) -> tuple[str, list[str]] | None:
        """Whose token this is, and its scopes; None for an unknown token."""
        with self._lock:
            owner = self._tokens.get(token)
            if owner is None:
                return None
            return owner, list(self._token_scopes.get(token, []))

    def add_repo(self, username: str, repo_name: str) -> None:
        """Make a user own a repository (which blocks deleting them without purge)."""
        with self._lock:
            user = self.users.get(username.lower())
            if user is None:
                raise KeyError(f"the Gitea stand-in has no user {username!r}")
            user["repos"].append(repo_name)

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        message: str = "injected failure",
    ) -> None:
        """Answer the next matching request with `status` and a Gitea error body.

        `path_regex` is searched in the request path (which starts with /api/v1). A
        request that breaks the spec is reported as a violation instead and does not
        use up the injection.
        """
        injection = _Injection(method.upper(), re.compile(path_regex), status, message)
        with self._lock:
            self._injections.append(injection)

    def assert_clean(self) -> None:
        """Raise AssertionError when any request or answer broke the spec."""
        problems = [*self.violations, *self.response_violations]
        assert not problems, "Gitea stand-in saw spec violations:\n" + "\n".join(
            problems
        )

    def handle(self, method: str, target: str, headers: Message, raw: bytes) -> Reply:
        """Answer one request; called from the server's threads."""
        with self._lock:
            return self._handle(method, target, headers, raw)

    def _handle(self, method: str, target: str, headers: Message, raw: bytes) -> Reply:
        split = urlsplit(target)
        query = parse_qs(split.query, keep_blank_values=True)
        sent = bool(raw.strip())
        try:
            body = json.loads(raw) if sent else None
            parse_problem = None
        except ValueError as error:
            body, parse_problem = None, f"the body is not valid JSON ({error})"
        flat_query = {name: values[-1] for name, values in query.items()}
        self.requests.append((method, split.path, flat_query, body))

        if not split.path.startswith(BASE_PATH + "/"):
            return self._reject(method, split.path, 404, ["path is outside /api/v1"])
        found = self.checker.match(split.path[len(BASE_PATH) :])
        if found is None:
            return self._reject(method, split.path, 404, ["path is not in the spec"])
        template, path_params = found
        if self.checker.operation(template, method) is None:
            problem = f"{method} is not an operation of {template}"
            return self._reject(method, split.path, 405, [problem])

        problems = self.checker.check_request(
            template, method, path_params, query, headers, (sent, body)
        )
        content_type = headers.get("Content-Type", "")
        if sent and "json" not in content_type:
            problems.append(f"Content-Type is {content_type!r}, not application/json")
        if parse_problem:
            problems.append(parse_problem)
        if problems:
            return self._reject(method, split.path, 422, problems)

        injected = self._take_injection(method, split.path)
        if injected is not None:
            return injected

        reply = self._dispatch(method, template, path_params, flat_query, headers, body)
        for problem in self.checker.check_response(
            template, method, reply.status, reply.body
        ):
            note = f"{method} {split.path} -> {reply.status}: {problem}"
            logger.error("Gitea stand-in answered outside the spec: %s", note)
            self.response_violations.append(note)
        return reply

    def _dispatch(
        self,
        method: str,
        template: str,
        path_params: dict[str, str],
        query: dict[str, str],
        headers: Message,
        body: Any,
    ) -> Reply:
        doer, denied = self._authenticate(headers, query)
        if denied is not None:
            return denied

        access, handler = _ENDPOINTS.get((method, template), ("public", None))
        if template.startswith("/admin/"):
            access = "admin"
        if access != "public" and doer is None:
            return self._error(401, "token is required")
        if access == "admin" and not (doer and doer["is_admin"]):
            return self._error(403, "user should be the site admin")

        if handler is None:
            self.unimplemented.append(f"{method} {template}")
            message = f"stand-in: {method} {template} is not implemented"
            return self._error(501, message)
        if "username" in path_params and template.startswith("/admin/"):
            if path_params["username"].lower() not in self.users:
                name = path_params["username"].lower()
                return self._error(404, f"user redirect does not exist [name: {name}]")
        return handler(self, doer, {**path_params, **query}, body)

    def _authenticate(
        self, headers: Message, query: dict[str, str]
    ) -> tuple[StoredUser | None, Reply | None]:
        """Find the request's user as Gitea's token auth and sudo do."""
        credential = headers.get("Authorization")
        token = query.get("token") or query.get("access_token")
        self._basic_auth = False
        if credential:
            scheme, _, value = credential.partition(" ")
            if scheme.lower() == "basic":
                return self._authenticate_basic(value.strip())
            token = value.strip() if scheme.lower() in ("token", "bearer") else None
            if token is None:
                return None, self._error(401, "invalid username, password or token")
        if not token:
            return None, None

        username = self._tokens.get(token)
        if username is None or username not in self.users:
            return None, self._error(401, "invalid username, password or token")
        doer = self.users[username]
        refused = self._refused_sign_in(doer)
        if refused is not None:
            return None, refused

        sudo = query.get("sudo") or headers.get("Sudo")
        if sudo:
            if not doer["is_admin"]:
                message = "Only administrators allowed to sudo."
                return None, Reply(403, {"message": message})
            if sudo.lower() not in self.users:
                return None, self._error(404, "not found")
            doer = self.users[sudo.lower()]
        return doer, None

    def _authenticate_basic(
        self, encoded: str
    ) -> tuple[StoredUser | None, Reply | None]:
        """A user name and password, as Gitea checks them for basic auth."""
        try:
            name, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return None, self._error(401, "invalid username, password or token")
        user = self.users.get(name.lower())
        if user is None or not user["password"] or user["password"] != password:
            return None, self._error(401, "invalid username, password or token")
        refused = self._refused_sign_in(user)
        if refused is not None:
            return None, refused
        self._basic_auth = True
        return user, None

    def _refused_sign_in(self, user: StoredUser) -> Reply | None:
        """Gitea's answer to a locked user, or one who must change the password."""
        if user["prohibit_login"] or not user["active"]:
            message = (
                "This account is prohibited from signing in, "
                "please contact your site administrator."
            )
            return Reply(403, {"message": message})
        if user["must_change_password"]:
            # Gitea builds this link from ROOT_URL, which ends in "/".
            link = f"{self.url}//user/change_password"
            message = f"You must change your password. Change it at: {link}"
            return Reply(403, {"message": message})
        return None

    def _reject(
        self, method: str, path: str, status: int, problems: list[str]
    ) -> Reply:
        notes = [f"{method} {path}: {problem}" for problem in problems]
        for note in notes:
            logger.warning("Request outside the Gitea spec: %s", note)
        self.violations.extend(notes)
        message = "stand-in: request does not match the Gitea API: " + "; ".join(
            problems
        )
        return self._error(status, message)

    def _take_injection(self, method: str, path: str) -> Reply | None:
        for injection in self._injections:
            if injection.method == method and injection.path.search(path):
                self._injections.remove(injection)
                return self._error(injection.status, injection.message)
        return None

    def _error(self, status: int, message: str) -> Reply:
        """Gitea's API error body."""
        return Reply(status, {"message": message, "url": f"{self.url}/api/swagger"})

    def _store_user(
        self, username: str, email: str, password: str, options: Mapping[str, Any]
    ) -> StoredUser:
        must_change = options.get("must_change_password")
        user = StoredUser(
            id=self._next_id,
            username=username,
            email=email,
            password=password,
            full_name=options.get("full_name", ""),
            login_name=options.get("login_name", ""),
            source_id=0,
            must_change_password=True if must_change is None else must_change,
            prohibit_login=False,
            visibility=options.get("visibility") or "public",
            is_admin=False,
            active=True,
            restricted=bool(options.get("restricted")),
            location="",
            website="",
            description="",
            created=options.get("created_at") or _now(),
            repos=[],
            tokens={},
        )
        self._next_id += 1
        self.users[username.lower()] = user
        return user

    def user_json(self, user: StoredUser, doer: StoredUser | None) -> dict[str, Any]:
        """Render a user as Gitea's User, showing private fields to admins and self."""
        signed = doer is not None
        authed = doer is not None and (doer["id"] == user["id"] or doer["is_admin"])
        placeholder = f"{user['username'].lower()}@noreply.localhost"
        digest = hashlib.md5(user["email"].lower().encode(), usedforsecurity=False)

        return {
            "id": user["id"],
            "login": user["username"],
            "login_name": user["login_name"] if authed else "",
            "source_id": user["source_id"] if authed else 0,
            "full_name": user["full_name"],
            "email": user["email"] if signed else placeholder,
            "avatar_url": f"{self.url}/avatars/{digest.hexdigest()}",
            "html_url": f"{self.url}/{user['username']}",
            "language": "",
            "is_admin": user["is_admin"] if authed else False,
            "last_login": "1970-01-01T00:00:00Z" if authed else "0001-01-01T00:00:00Z",
            "created": user["created"],
            "restricted": user["restricted"],
            "active": user["active"] if authed else False,
            "prohibit_login": user["prohibit_login"] if authed else False,
            "location": user["location"],
            "website": user["website"],
            "description": user["description"],
            "visibility": user["visibility"],
            "followers_count": 0,
            "following_count": 0,
            "starred_repos_count": 0,
            "username": user["username"],
        }

    def _email_owner(self, email: str) -> StoredUser | None:
        for user in self.users.values():
            if user["email"].lower() == email.lower():
                return user
        return None

    def _get_version(
        self, doer: StoredUser | None, args: dict[str, str], body: Any
    ) -> Reply:
        """GET /version: the server's version."""
        return Reply(200, {"version": GITEA_VERSION})

    def _get_self(
        self, doer: StoredUser | None, args: dict[str, str], body: Any
    ) -> Reply:
        """GET /user: the token's own user."""
        assert doer is not None
        return Reply(200, self.user_json(doer, doer))

    def _get_user(
        self, doer: StoredUser | None, args: dict[str, str], body: Any
    ) -> Reply:
        """GET /users/{username}: one user, hidden when its visibility says so."""
        name = args["username"].lower()
        user = self.users.get(name)
        if user is None:
            return self._error(404, f"user redirect does not exist [name: {name}]")

        hidden = (user["visibility"] == "limited" and doer is None) or (
            user["visibility"] == "private"
            and (doer is None or (doer["id"] != user["id"] and not doer["is_admin"]))
        )
        if hidden:
            return self._error(404, "not found")
        return Reply(200, self.user_json(user, doer))

    def _list_users(
        self, doer: StoredUser | None, args: dict[str, str], body: Any
    ) -> Reply:
        """GET /admin/users: users filtered, sorted and paged as Gitea does."""
        users = list(self.users.values())

        visibility = args.get("visibility")
        if visibility and visibility not in _VISIBILITIES:
            return self._error(422, f'Invalid visibility: "{visibility}"')
        filters: dict[str, Callable[[StoredUser, str], bool]] = {
            "visibility": lambda u, v: u["visibility"] == v,
            "login_name": lambda u, v: u["login_name"] == v.strip(),
            "source_id": lambda u, v: not v or u["source_id"] == int(v),
            "is_active": lambda u, v: u["active"] == _go_bool(v),
            "is_admin": lambda u, v: u["is_admin"] == _go_bool(v),
            "is_restricted": lambda u, v: u["restricted"] == _go_bool(v),
            "is_prohibit_login": lambda u, v: u["prohibit_login"] == _go_bool(v),
            "is_2fa_enabled": lambda u, v: not _go_bool(v),
            "q": lambda u, v: (
                v.strip().lower()
                in f"{u['username']}\n{u['full_name']}\n{u['email']}".lower()
            ),
        }
        for name, keep in filters.items():
            if args.get(name):
                users = [user for user in users if keep(user, args[name])]

        sort, order = args.get("sort", ""), args.get("order") or "asc"
        keys: dict[str, Callable[[StoredUser], Any]] = {
            "name": lambda u: u["username"].lower(),
            "created": lambda u: (u["created"], u["id"]),
            "updated": lambda u: (u["created"], u["id"]),
            "id": lambda u: u["id"],
        }
        if sort and order not in ("asc", "desc"):
            return self._error(422, f'Invalid sort order: "{order}"')
        if sort and sort not in keys:
            return self._error(422, f'Invalid sort mode: "{sort}"')
        descending = bool(sort) and order == "desc"
        users.sort(key=keys[sort or "name"], reverse=descending)

        page = max(int(args.get("page") or 0), 1)
        size = int(args.get("limit") or 0)
        size = DEFAULT_PAGE_SIZE if size <= 0 else min(size, MAX_PAGE_SIZE)
        chosen = users[(page - 1) * size : page * size]
        headers = {"X-Total-Count": str(len(users))}
        link = self._link_header("/api/v1/admin/users", args, len(users), size)
        if link:
            headers["Link"] = link
        return Reply(200, [self.user_json(user, doer) for user in chosen], headers)

    def _link_header(
        self, path: str, args: dict[str, str], total: int, size: int
    ) -> str:
        """Gitea's pagination links: next, last, first and prev, as they apply."""
        pages = max(math.ceil(total / size), 1)
        current = min(max(int(args.get("page") or 0), 1), pages)
        wanted = [
            ("next", current + 1, current < pages),
            ("last", pages, current != pages),
            ("first", 1, current != 1),
            ("prev", current - 1, current > 1),
        ]
        links = []
        for rel, page, applies in wanted:
            if applies:
                query = urlencode(sorted({**args, "page": str(page)}.items()))
                links.append(f'<{self.url}{path}?{query}>; rel="{rel}"')
        return ",".join(links)

    def _create_user(
        self, doer: StoredUser | None, args: dict[str, str], body: Any
    ) -> Reply:
        """POST /admin/users: create a user, checking in Gitea's order."""
        binding = _binding_error(_CREATE_RULES, body)
        if binding:
            return self._error(422, binding)
        if body.get("source_id"):
            message = f"login source does not exist [id: {body['source_id']}]"
            return self._error(422, message)

        # Gitea looks at the password before the name, and calls a short one missing.
        password = body.get("password", "")
        if len(password) < MIN_PASSWORD_LENGTH:
            return self._error(400, "PasswordIsRequired")

        name, email = body["username"], body["email"]
        lowered = name.strip().lower()
        if lowered in RESERVED_NAMES:
            return self._error(422, f"name is reserved [name: {lowered}]")
        for suffix in RESERVED_SUFFIXES:
            if lowered.endswith(suffix):
                message = f"name pattern is not allowed [pattern: *{suffix}]"
                return self._error(422, message)
        if lowered in self.users:
            return self._error(422, f"user already exists [name: {name}]")
        if self._email_owner(email) is not None:
            return self._error(422, f"e-mail already in use [email: {email}]")

        user = self._store_user(name, email, password, body)
        logger.info("Gitea stand-in created user %s", name)
        return Reply(201, self.user_json(user, doer))

    def _edit_user(
        self, doer: StoredUser | None, args: dict[str, str], body: Any
    ) -> Reply:
        """PATCH /admin/users/{username}: change the fields the body sets."""
        user = self.users[args["username"].lower()]
        binding = _binding_error(_EDIT_RULES, body)
        if binding:
            return self._error(422, binding)
        if body.get("source_id"):
            message = f"login source does not exist [id: {body['source_id']}]"
            return self._error(500, message)

        password = body.get("password", "")
        if password and len(password) < MIN_PASSWORD_LENGTH:
            message = f"password must be at least {MIN_PASSWORD_LENGTH} characters"
            return self._error(400, message)
        email = body.get("email")
        if email is not None:
            if not _EMAIL_SHAPE.fullmatch(email):
                return self._error(400, f"e-mail invalid [email: {email}]")
            owner = self._email_owner(email)
            if owner is not None and owner["id"] != user["id"]:
                return self._error(400, f"e-mail already in use [email: {email}]")
        admins = sum(1 for other in self.users.values() if other["is_admin"])
        if body.get("admin") is False and user["is_admin"] and admins <= 1:
            message = f"can not delete the last admin user [uid: {user['id']}]"
            return self._error(400, message)

        user["login_name"] = body["login_name"]
        if password:
            user["password"] = password
        if email is not None:
            user["email"] = email
        if body.get("visibility"):
            user["visibility"] = body["visibility"]
        settable = {
            "must_change_password": "must_change_password",
            "prohibit_login": "prohibit_login",
            "full_name": "full_name",
            "website": "website",
            "location": "location",
            "description": "description",
            "active": "active",
            "admin": "is_admin",
            "restricted": "restricted",
        }
        for key, stored in settable.items():
            if body.get(key) is not None:
                user[stored] = body[key]  # type: ignore[literal-required]

        logger.info("Gitea stand-in edited user %s", user["username"])
        return Reply(200, self.user_json(user, doer))

    def _delete_user(
        self, doer: StoredUser | None, args: dict[str, str], body: Any
    ) -> Reply:
        """DELETE /admin/users/{username}: remove a user, refusing owners."""
        user = self.users[args["username"].lower()]
        if doer is not None and doer["id"] == user["id"]:
            return self._error(422, "you cannot delete yourself")
        if user["repos"] and not _go_bool(args.get("purge")):
            message = f"user still has ownership of repositories [uid: {user['id']}]"
            return self._error(422, message)

        del self.users[args["username"].lower()]
        self._tokens = {t: n for t, n in self._tokens.items() if n in self.users}
        logger.info("Gitea stand-in deleted user %s", user["username"])
        return Reply(204)


def _create_token(
    self: GiteaStandin,
    doer: StoredUser | None,
    params: dict[str, str],
    body: Any,
) -> Reply:
    """POST /users/{username}/tokens: only with the user's own basic auth."""
    if doer is None or not self._basic_auth:
        return self._error(401, "auth required")
    if doer["username"].lower() != params["username"].lower():
        return self._error(403, "access denied")
    name = body["name"]
    if name in doer["tokens"]:
        return self._error(400, "access token name has been used already")
    secret = hashlib.sha1(f"{doer['id']}:{name}:{len(self._tokens)}".encode())
    sha1 = secret.hexdigest()
    scopes = list(body.get("scopes") or [])
    doer["tokens"][name] = scopes
    self._tokens[sha1] = doer["username"].lower()
    self._token_scopes[sha1] = scopes
    return Reply(
        201,
        {
            "id": len(self._tokens),
            "name": name,
            "scopes": scopes,
            "sha1": sha1,
            "token_last_eight": sha1[-8:],
        },
    )


_ENDPOINTS: dict[tuple[str, str], tuple[str, _Endpoint]] = {
    ("GET", "/version"): ("public", GiteaStandin._get_version),
    ("GET", "/user"): ("token", GiteaStandin._get_self),
    ("GET", "/users/{username}"): ("public", GiteaStandin._get_user),
    ("GET", "/admin/users"): ("admin", GiteaStandin._list_users),
    ("POST", "/admin/users"): ("admin", GiteaStandin._create_user),
    ("PATCH", "/admin/users/{username}"): ("admin", GiteaStandin._edit_user),
    ("DELETE", "/admin/users/{username}"): ("admin", GiteaStandin._delete_user),
    ("POST", "/users/{username}/tokens"): ("token", _create_token),
}
