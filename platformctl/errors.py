"""The exceptions platformctl raises, and the exit code each one ends in.

Provisioners and the orchestration raise these; only the command-line entry point
turns them into a message and an exit code.

Exit codes:
    0  success, including "already so, nothing changed"
    1  a service failed or refused (PostgreSQL, Gitea, Docker)
    2  bad input or usage: an email that is not one, a broken config file
    3  not found: no such learner
  130  stopped by Ctrl-C (or SIGTERM, or a hang-up); what was under way was undone
"""

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

EXIT_OK = 0
EXIT_SERVICE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INTERRUPTED = 130


class PlatformError(Exception):
    """Base of every error that platformctl expects and explains in one line."""

    exit_code = EXIT_SERVICE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class InputError(PlatformError):
    """A value given by the operator cannot be used."""

    exit_code = EXIT_USAGE


class ConfigError(PlatformError):
    """The config file is missing, unreadable or holds a wrong value."""

    exit_code = EXIT_USAGE


class NotFoundError(PlatformError):
    """The learner or object asked for does not exist."""

    exit_code = EXIT_NOT_FOUND


class ServiceError(PlatformError):
    """A service did not answer, refused, or answered something unexpected."""

    def __init__(self, service: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{service}: {message}", hint)
        self.service = service


class ConflictError(ServiceError):
    """A resource with the learner's name exists but platformctl did not make it."""


P = ParamSpec("P")
R = TypeVar("R")


def translate_errors(
    service: str, kinds: Callable[[], tuple[type[Exception], ...]]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a provisioner method so a library's errors become ServiceError.

    kinds returns the exception classes to turn; it is called only when one is
    raised, so the library is imported only where it is used anyway.
    """

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(*args, **kwargs)
            except PlatformError:
                raise
            except Exception as exc:
                if not isinstance(exc, kinds()):
                    raise
                lines = str(exc).strip().splitlines()
                text = lines[0] if lines else type(exc).__name__
                raise ServiceError(service, text) from exc

        return wrapper

    return decorate
