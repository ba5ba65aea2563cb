"""New passwords, and the one-way forms that services store instead of them."""

import secrets

# No 0/o, 1/l/i: a child copies this from a card.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_password(groups: int = 4, group_length: int = 4) -> str:
    """A random password such as 'k7mp-x3rt-q9wd-a2fh' (about 79 bits)."""
    return "-".join(
        "".join(secrets.choice(_ALPHABET) for _ in range(group_length))
        for _ in range(groups)
    )


def argon2_hash(password: str) -> str:
    """The argon2id hash that code-server takes in HASHED_PASSWORD."""
    # The handler's own module: passlib.hash loads it lazily, which two threads
    # hashing for the first time at once can trip over.
    from passlib.handlers.argon2 import argon2

    return str(argon2.using(type="ID").hash(password))
