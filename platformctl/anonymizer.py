"""Turn a learner's email into the alias that every service knows them by.

The email is checked and normalized, then reduced to a keyed digest (HMAC-SHA256
with the site key): without the key, nobody can go from an email to its digest by
guessing. The alias is drawn from that digest, so the same email and key always
give the same alias. Neither the email nor anything readable from it is kept.
"""

import hashlib
import hmac
import os
import random
import re
import secrets
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from platformctl.errors import ConfigError, InputError

SECRET_BYTES = 32

# Letters, digits and single hyphens, starting with a letter: a valid Gitea user
# name, PostgreSQL identifier (when quoted) and Docker container name.
ALIAS_PATTERN = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
ALIAS_MAX_LENGTH = 40


def normalize_email(raw: str) -> str:
    """The canonical form of an email: trimmed, lower-case, ASCII (IDNA) domain.

    Raises InputError, naming the value, when it is not an email address.
    """
    from email_validator import EmailNotValidError, validate_email

    text = raw.strip()
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InputError(
            f"'{shown}' is not an email address: {str(exc).rstrip('.')}",
            "give one like learner@example.com",
        ) from None

    return f"{checked.local_part.lower()}@{checked.ascii_domain.lower()}"


def digest(email: str, secret: bytes) -> bytes:
    """The keyed digest of a normalized email."""
    return hmac.new(secret, email.encode("utf-8"), hashlib.sha256).digest()


def key_fingerprint(secret: bytes) -> str:
    """A short value that tells one site key from another without revealing it."""
    return hmac.new(secret, b"platformctl site key", hashlib.sha256).hexdigest()[:16]


def alias_candidates(email_digest: bytes) -> Iterator[str]:
    """Aliases like 'hungry-owl-5231' drawn from the digest, best first.

    The sequence is endless and the same for the same digest; callers take the
    first one that no other learner holds.
    """
    generator = _word_generator()
    rng = random.Random(email_digest)
    generator.random = rng
    while True:
        words = generator.generate_slug()
        alias = f"{words}-{rng.randrange(10000):04d}"
        if len(alias) <= ALIAS_MAX_LENGTH and ALIAS_PATTERN.fullmatch(alias):
            yield alias


def is_alias(text: str) -> bool:
    """Whether text has the shape of an alias (it may still be no learner's)."""
    return len(text) <= ALIAS_MAX_LENGTH and bool(ALIAS_PATTERN.fullmatch(text))


@lru_cache(maxsize=1)
def _word_config() -> dict[str, Any]:
    import coolname
    from coolname.loader import load_config

    words = load_config(Path(coolname.__file__).parent / "data")
    return {
        "adjective": words["adjective"],
        "animal": words["animal"],
        "all": {"type": "cartesian", "lists": ["adjective", "animal"]},
    }


def _word_generator() -> Any:
    # coolname's module-level functions draw from the global random generator;
    # a generator of our own, with its own Random, keeps the draw reproducible.
    from coolname import RandomGenerator

    return RandomGenerator(_word_config(), rand=random.Random(0))


def create_secret(path: Path) -> bool:
    """Create the site key at path, readable by its owner alone.

    Returns False, and leaves the file alone, when it exists already.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(SECRET_BYTES) + "\n")
    return True


def load_secret(path: Path) -> bytes:
    """The site key. Raises ConfigError when it is missing, short or too open."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no site key at '{path}'",
            "restore it from your backup, or run 'platformctl init' for a new site",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the site key '{path}': {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        text = ""  # refused below, as any key that is not hex

    if mode & 0o077:
        raise ConfigError(
            f"the site key '{path}' can be read by others", f"run 'chmod 600 {path}'"
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < SECRET_BYTES:
        raise ConfigError(
            f"the site key '{path}' is not {SECRET_BYTES} bytes of hex",
            "restore it from your backup: every alias depends on it",
        )
    return key
