"""One provisioner per service. Each speaks the same small verbs:

- ``check()`` raises unless the service answers and grants what platformctl needs;
- ``ensure(alias, password)`` makes the learner's part exist and returns whether it
  changed anything;
- ``remove(alias)`` takes the part away and returns whether there was one; a part
  that is already gone is not an error.

A part that carries the learner's alias but was not made by platformctl is never
touched: ``ensure`` and ``remove`` raise ConflictError instead.
"""

from typing import Protocol


class Provisioner(Protocol):
    """What the orchestration needs from a service module."""

    service: str

    def check(self) -> None: ...

    def ensure(self, alias: str, password: str) -> bool: ...

    def remove(self, alias: str) -> bool: ...

    def exists(self, alias: str) -> bool: ...

    def close(self) -> None: ...
