"""The learner's code-server workspace: one Docker container and one home volume.

Both are named after the alias and carry platformctl's labels; a container or
volume with the learner's name but without those labels belongs to someone else
and is never touched. The code-server password reaches the container only as an
argon2 hash.
"""

import io
import json
import logging
import random
import socket
import tarfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from platformctl.config import WorkspaceSettings
from platformctl.credentials import argon2_hash
from platformctl.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    ServiceError,
    translate_errors,
)

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

log = logging.getLogger(__name__)

SERVICE = "workspace"
LABEL_MANAGED = "org.platformctl.managed"
LABEL_ALIAS = "org.platformctl.alias"
CONTAINER_PORT = "8080/tcp"
START_ATTEMPTS = 5
# Settings that survive a password change: the learner's libpq settings.
EXTRA_ENVIRONMENT = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER")


@dataclass(frozen=True)
class WorkspaceState:
    """What Docker holds for one learner."""

    status: str
    url: str | None

    @property
    def running(self) -> bool:
        return self.status == "running"


def _library_errors() -> tuple[type[Exception], ...]:
    import docker

    return (docker.errors.DockerException,)


class WorkspaceProvisioner:
    """Workspace containers on one Docker Engine."""

    service = SERVICE

    def __init__(self, settings: WorkspaceSettings) -> None:
        self.settings = settings
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> "docker.DockerClient":
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env()
            except docker.errors.DockerException as exc:
                raise ServiceError(
                    SERVICE,
                    f"cannot reach the Docker Engine: {exc}",
                    "start dockerd, or set DOCKER_HOST",
                ) from None
        return self._client

    @translate_errors(SERVICE, _library_errors)
    def close(self) -> None:
        """Let go of the connection to the service."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def container_name(self, alias: str) -> str:
        """The Docker name of the learner's workspace container."""
        return f"{self.settings.name_prefix}-{alias}"

    def volume_name(self, alias: str) -> str:
        """The Docker name of the learner's home volume."""
        return f"{self.settings.name_prefix}-{alias}-home"

    def check(self) -> None:
        """Raise ServiceError unless Docker answers and has the workspace image."""
        import docker

        try:
            self.client.ping()
            self.client.images.get(self.settings.image)
        except docker.errors.ImageNotFound:
            raise ServiceError(
                SERVICE,
                f"image '{self.settings.image}' is not on this Docker Engine",
                "build it first (see README.md), or set [workspace] image",
            ) from None
        except docker.errors.DockerException as exc:
            raise ServiceError(SERVICE, f"Docker Engine error: {exc}") from None

    @translate_errors(SERVICE, _library_errors)
    def find(self, alias: str) -> "Container | None":
        """The learner's container, or None. Raises ConflictError if not ours."""
        import docker

        try:
            container = self.client.containers.get(self.container_name(alias))
        except docker.errors.NotFound:
            return None
        if container.labels.get(LABEL_MANAGED) != "true":
            raise ConflictError(
                SERVICE,
                f"container '{container.name}' exists but was not made by platformctl",
                "rename or remove that container",
            )
        return container

    def exists(self, alias: str) -> bool:
        """Whether the learner's container exists."""
        return self.find(alias) is not None

    def host_port(self, alias: str) -> int | None:
        """The host port the learner's workspace listens on, if it exists."""
        container = self.find(alias)
        return _host_port(container.attrs) if container is not None else None

    def url(self, container: "Container") -> str | None:
        """The address at which the learner opens the workspace."""
        port = _host_port(container.attrs)
        if port is None:
            return None
        return f"http://{self.settings.public_host}:{port}/"

    @translate_errors(SERVICE, _library_errors)
    def ensure(
        self,
        alias: str,
        password: str,
        environment: dict[str, str] | None = None,
        files: dict[str, str] | None = None,
    ) -> bool:
        """Create and start the learner's workspace unless it exists.

        environment is added to the container's; files (name to text) are written
        into the home folder, readable by the learner alone. Returns only when the
        workspace answers HTTP; a container that did not come up is removed.
        """
        if self.find(alias) is not None:
            log.debug("workspace: container for %s exists already", alias)
            return False

        self.ensure_network()
        volume_created = self._ensure_volume(alias)
        try:
            container = self._start(alias, password, environment or {})
            if files:
                archive = _archive(files, owner=self.settings.user)
                container.put_archive(self.settings.home, archive)
            self._wait_until_ready(alias, container)
        except BaseException:
            # Also after an interrupted create: Docker may have finished it anyway.
            self._discard(alias, volume_created)
            raise

        log.info("workspace: started %s at %s", container.name, self.url(container))
        return True

    @translate_errors(SERVICE, _library_errors)
    def remove(self, alias: str, keep_volume: bool = False) -> bool:
        """Remove the learner's container and, unless kept, the home volume."""
        container = self.find(alias)
        if container is not None:
            container.remove(force=True)
            log.info("workspace: removed container %s", container.name)
        volume_gone = False if keep_volume else self._remove_volume(alias)
        return container is not None or volume_gone

    @translate_errors(SERVICE, _library_errors)
    def inventory(self) -> dict[str, WorkspaceState]:
        """Every workspace container of this site, by alias, in one call."""
        found = {}
        for container in self._site_objects(
            self.client.containers.list(
                all=True,
                filters={"label": f"{LABEL_MANAGED}=true"},
                ignore_removed=True,
            )
        ):
            found[container.labels[LABEL_ALIAS]] = WorkspaceState(
                status=container.status, url=self.url(container)
            )
        return found

    @translate_errors(SERVICE, _library_errors)
    def volume_inventory(self) -> set[str]:
        """The aliases that have a home volume of this site."""
        volumes = self.client.volumes.list(filters={"label": f"{LABEL_MANAGED}=true"})
        return {
            (volume.attrs.get("Labels") or {})[LABEL_ALIAS]
            for volume in volumes
            if volume.name.startswith(self.settings.name_prefix + "-")
            and LABEL_ALIAS in (volume.attrs.get("Labels") or {})
        }

    def last_activity(self, container: "Container") -> datetime | None:
        """When the learner last used the workspace: code-server's heartbeat, or
        the container's start when there was none since. None when stopped."""
        if container.status != "running":
            return None
        started = _docker_time(container.attrs["State"]["StartedAt"])
        try:
            with urllib.request.urlopen(
                self._health_url(container), timeout=3
            ) as answer:
                beat_ms = int(json.load(answer).get("lastHeartbeat") or 0)
        except (OSError, ValueError):
            # An unreadable heartbeat never makes a workspace look idle.
            return datetime.now(UTC)
        beat = datetime.fromtimestamp(beat_ms / 1000, UTC)
        return max(beat, started)

    @translate_errors(SERVICE, _library_errors)
    def activity(self) -> dict[str, datetime | None]:
        """The last activity of every workspace of this site, asked side by side."""
        containers = self._site_objects(
            self.client.containers.list(
                all=True,
                filters={"label": f"{LABEL_MANAGED}=true"},
                ignore_removed=True,
            )
        )
        with ThreadPoolExecutor(max_workers=16) as pool:
            times = pool.map(self.last_activity, containers)
            return {
                container.labels[LABEL_ALIAS]: when
                for container, when in zip(containers, times, strict=True)
            }

    @translate_errors(SERVICE, _library_errors)
    def suspend(self, alias: str) -> bool:
        """Stop the workspace; it stays stopped across restarts of Docker."""
        container = self._require(alias)
        if container.status not in ("running", "restarting"):
            log.debug("workspace: %s is stopped already", container.name)
            return False
        container.stop(timeout=10)
        log.info("workspace: stopped %s", container.name)
        return True

    @translate_errors(SERVICE, _library_errors)
    def resume(self, alias: str) -> bool:
        """Start the workspace again and wait until it answers."""
        container = self._require(alias)
        if container.status == "running":
            log.debug("workspace: %s is running already", container.name)
            return False
        container.start()
        container.reload()
        self._wait_until_ready(alias, container)
        log.info("workspace: started %s", container.name)
        return True

    @translate_errors(SERVICE, _library_errors)
    def set_password(
        self, alias: str, password: str, files: dict[str, str] | None = None
    ) -> None:
        """Give the workspace a new password: a new container on the same port,
        the same home volume. Raises InputError when the workspace is stopped."""
        container = self._require(alias)
        if container.status != "running":
            raise InputError(
                f"the workspace of '{alias}' is stopped",
                "resume the learner first, then reset the password",
            )
        environment = dict(
            line.split("=", 1)
            for line in container.attrs["Config"]["Env"] or []
            if line.split("=", 1)[0] in EXTRA_ENVIRONMENT
        )
        port = _host_port(container.attrs)
        container.remove(force=True)
        replacement = self._start(alias, password, environment, port=port)
        if files:
            replacement.put_archive(
                self.settings.home, _archive(files, owner=self.settings.user)
            )
        self._wait_until_ready(alias, replacement)
        log.info("workspace: new password for %s", replacement.name)

    @translate_errors(SERVICE, _library_errors)
    def write_files(self, alias: str, files: dict[str, str]) -> None:
        """Write files into the running workspace's home, for the learner alone."""
        container = self._require(alias)
        container.put_archive(
            self.settings.home, _archive(files, owner=self.settings.user)
        )

    def _require(self, alias: str) -> "Container":
        container = self.find(alias)
        if container is None:
            raise NotFoundError(f"workspace: no container for '{alias}'")
        return container

    def _site_objects(self, objects: list[Any]) -> list[Any]:
        prefix = self.settings.name_prefix + "-"
        return [
            item
            for item in objects
            if item.name.startswith(prefix)
            and item.labels.get(LABEL_MANAGED) == "true"
            and LABEL_ALIAS in item.labels
        ]

    @translate_errors(SERVICE, _library_errors)
    def ensure_network(self) -> bool:
        """Create the learners' network unless it exists.

        Containers on it reach the host (PostgreSQL, Gitea) and the outside, but
        not one another: inter-container traffic is off.
        """
        import docker

        if not self.settings.network:
            return False
        try:
            network = self.client.networks.get(self.settings.network)
        except docker.errors.NotFound:
            self.client.networks.create(
                self.settings.network,
                driver="bridge",
                options={"com.docker.network.bridge.enable_icc": "false"},
                labels={LABEL_MANAGED: "true"},
            )
            log.info("workspace: created network %s", self.settings.network)
            return True
        options = network.attrs.get("Options") or {}
        if options.get("com.docker.network.bridge.enable_icc") != "false":
            raise ConflictError(
                SERVICE,
                f"network '{self.settings.network}' lets containers reach each other",
                "remove it, or name another in [workspace] network",
            )
        return False

    def _discard(self, alias: str, with_volume: bool) -> None:
        """Remove a workspace that did not come up, keeping the error that stopped
        it as the one reported."""
        import docker

        try:
            container = self.find(alias)
            if container is not None:
                container.remove(force=True)
            if with_volume:
                self._remove_volume(alias)
        except (docker.errors.DockerException, ServiceError) as exc:
            log.warning("workspace: could not clean up after %s: %s", alias, exc)

    def _ensure_volume(self, alias: str) -> bool:
        import docker

        name = self.volume_name(alias)
        try:
            volume = self.client.volumes.get(name)
        except docker.errors.NotFound:
            self.client.volumes.create(name, labels=self._labels(alias))
            log.info("workspace: created volume %s", name)
            return True
        if (volume.attrs.get("Labels") or {}).get(LABEL_MANAGED) != "true":
            raise ConflictError(
                SERVICE,
                f"volume '{name}' exists but was not made by platformctl",
                "rename or remove that volume",
            )
        return False

    def _remove_volume(self, alias: str) -> bool:
        import docker

        name = self.volume_name(alias)
        try:
            volume = self.client.volumes.get(name)
        except docker.errors.NotFound:
            return False
        if (volume.attrs.get("Labels") or {}).get(LABEL_MANAGED) != "true":
            raise ConflictError(
                SERVICE,
                f"volume '{name}' exists but was not made by platformctl",
                "rename or remove that volume",
            )
        volume.remove(force=True)
        log.info("workspace: removed volume %s", name)
        return True

    def _start(
        self,
        alias: str,
        password: str,
        environment: dict[str, str],
        port: int | None = None,
    ) -> "Container":
        """Create and start the container on port, or else on a free host port.

        Two runs may pick the same port at once; the loser's start fails and it
        tries the next port.
        """
        import docker

        # Hashing is deliberately slow: once, not once per port tried.
        environment = {"HASHED_PASSWORD": argon2_hash(password), **environment}
        tried: set[int] = set()
        for _ in range(START_ATTEMPTS):
            if port is None or port in tried:
                port = self._free_port(exclude=tried)
            tried.add(port)
            container = self.client.containers.create(
                self.settings.image,
                name=self.container_name(alias),
                hostname=alias,
                labels=self._labels(alias),
                environment=environment,
                volumes={
                    self.volume_name(alias): {"bind": self.settings.home, "mode": "rw"}
                },
                ports={CONTAINER_PORT: (self.settings.bind_address, port)},
                user=self.settings.user,
                restart_policy={"Name": self.settings.restart_policy},
                mem_limit=self.settings.memory,
                nano_cpus=int(self.settings.cpus * 1e9),
                pids_limit=self.settings.pids_limit,
                security_opt=["no-new-privileges:true"],
                cap_drop=["ALL"],
                extra_hosts={"host.docker.internal": "host-gateway"},
                network=self.settings.network or None,
            )
            try:
                container.start()
            except docker.errors.APIError as exc:
                container.remove(force=True)
                if "port is already allocated" in str(
                    exc
                ) or "address already in use" in str(exc):
                    log.debug("workspace: port %d was taken meanwhile", port)
                    continue
                raise ServiceError(
                    SERVICE, f"container for '{alias}' did not start: {exc.explanation}"
                ) from None
            except BaseException:
                container.remove(force=True)
                raise
            container.reload()
            return container

        raise ServiceError(
            SERVICE,
            f"{START_ATTEMPTS} free host ports in a row were taken by other starts",
            "run the command again",
        )

    def _free_port(self, exclude: set[int]) -> int:
        taken = set(exclude)
        for container in self.client.containers.list(
            all=True, filters={"label": f"{LABEL_MANAGED}=true"}, ignore_removed=True
        ):
            port = _host_port(container.attrs)
            if port is not None:
                taken.add(port)

        # A random free port, not the lowest: runs that start at the same moment
        # then rarely reach for the same one.
        first, last = self.settings.port_first, self.settings.port_last
        candidates = [port for port in range(first, last + 1) if port not in taken]
        random.shuffle(candidates)
        for port in candidates:
            if _can_bind(self.settings.bind_address, port):
                return port
        raise ServiceError(
            SERVICE,
            f"every host port from {self.settings.port_first} to"
            f" {self.settings.port_last} is in use",
            "widen [workspace] port_first/port_last",
        )

    def _health_url(self, container: "Container") -> str:
        host = self.settings.bind_address
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{_host_port(container.attrs)}/healthz"

    def _wait_until_ready(self, alias: str, container: "Container") -> None:
        url = self._health_url(container)
        deadline = time.monotonic() + self.settings.ready_timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            container.reload()
            if container.status not in ("created", "running"):
                raise ServiceError(
                    SERVICE,
                    f"workspace for '{alias}' stopped while starting"
                    f" ({container.status}): {_last_log_line(container)}",
                )
            time.sleep(0.2)

        raise ServiceError(
            SERVICE,
            f"workspace for '{alias}' did not answer at {url} within"
            f" {self.settings.ready_timeout:g} s",
            "check the image, or raise [workspace] ready_timeout",
        )

    def _labels(self, alias: str) -> dict[str, str]:
        return {LABEL_MANAGED: "true", LABEL_ALIAS: alias}


def _docker_time(text: str) -> datetime:
    # Docker gives nanoseconds; Python reads at most microseconds.
    head, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00")


def _host_port(attrs: dict[str, Any]) -> int | None:
    bindings = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    for binding in bindings.get(CONTAINER_PORT) or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def _can_bind(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address or "0.0.0.0", port))
        except OSError:
            return False
    return True


def _archive(files: dict[str, str], owner: str) -> bytes:
    """A tar archive of files owned by owner ('uid:gid'), readable by them alone."""
    uid, _, gid = owner.partition(":")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            info.uid, info.gid = int(uid), int(gid or uid)
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _last_log_line(container: "Container") -> str:
    import docker

    try:
        lines = container.logs(tail=1).decode("utf-8", "replace").strip()
    except docker.errors.DockerException:
        return "no log"
    return lines or "no log"
