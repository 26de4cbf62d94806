"""PostgreSQL for the production profile: the Debian `postgresql` package's server, run by the
supervisor as one more child (so it is restarted like the rest), one database per service.

The cluster is made once (initdb) and kept, so a second `make up` over the same state finds its
data. initdb and the server refuse to run as root: as root they run as the package's `postgres`
user, from a directory that user owns outside the state directory (which may sit under a
directory private to root, such as pytest's temporary ones).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "postgres"
_MISSING = (
    "PostgreSQL is not installed (no postgres/initdb under /usr/lib/postgresql/*/bin or on PATH): "
    "the production profile needs the Debian package `postgresql` (`make install` installs it "
    "as root)"
)


class PostgresError(RuntimeError):
    """PostgreSQL could not be made ready; the message says why."""


def bindir() -> Path:
    """The newest installed PostgreSQL's bin directory."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name))

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=version)
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    raise PostgresError(_MISSING)


def database_name(service: str) -> str:
    """Each service's own database, as in production: `linker` -> `concord_linker`."""
    return "concord_" + service.replace("-", "_")


@dataclass
class Postgres:
    """One PostgreSQL cluster on loopback, trust authentication, TCP only."""

    var_dir: Path
    port: int
    host: str = "127.0.0.1"
    user: str = "postgres"

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    @property
    def root(self) -> Path:
        if not self.as_root:
            return self.var_dir / "postgres"
        # Named by the state directory, so the same `var/` finds the same cluster again.
        digest = hashlib.sha256(str(self.var_dir.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"concord-devstack-pg-{digest}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def marker(self) -> Path:
        """Written into the state directory with the cluster: a cluster outside it belongs to
        this `var/` only while the marker is there (`make clean` removes both together)."""
        return self.var_dir / "postgres" / "cluster"

    def initdb(self) -> None:
        """Create the cluster unless this state directory has one."""
        if (self.data_dir / "PG_VERSION").exists() and self.marker.exists():
            return
        # Left by an earlier, removed `var/` at the same path: its data was sealed with keys
        # that went with it, so it is not this state's.
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.root, SERVER_USER, SERVER_USER)
            self.root.chmod(0o700)
        argv = [str(bindir() / "initdb"), "-D", str(self.data_dir), "-U", self.user]
        argv += ["-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        as_user = ["runuser", "-u", SERVER_USER, "--"] if self.as_root else []
        result = subprocess.run(
            [*as_user, *argv], capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise PostgresError(f"initdb failed ({result.returncode}): {result.stderr.strip()}")
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(f"{self.data_dir}\n")

    @property
    def server_user(self) -> str | None:
        """Whom the server runs as: the package's user when we are root, else ourselves."""
        return SERVER_USER if self.as_root else None

    def server_argv(self) -> list[str]:
        """The server in the foreground, to run as the supervisor's child. Durability is traded
        for speed (no fsync) as for the embedded SQLite files: this is a local stack."""
        argv = [str(bindir() / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        argv += ["-c", f"listen_addresses={self.host}", "-c", "unix_socket_directories="]
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        # Two reconcilers and five other services, each with a pool: more than the default 100.
        argv += ["-c", "max_connections=300"]
        return argv

    def wait_ready(self, still_running: Callable[[], None], deadline: float) -> None:
        """Block until the server accepts connections; `still_running` raises if it died."""
        while True:
            still_running()
            probe = subprocess.run(
                [str(bindir() / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)],
                check=False,
                timeout=10,
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PostgresError(f"postgres did not accept connections on port {self.port}")
            time.sleep(0.1)

    def psql(self, database: str, sql: str) -> str:
        argv = [str(bindir() / "psql"), "-h", self.host, "-p", str(self.port), "-U", self.user]
        argv += ["-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if result.returncode != 0:
            raise PostgresError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def ensure_databases(self, services: tuple[str, ...]) -> dict[str, str]:
        """Each service's database, created if missing; returns their URLs by service."""
        existing = set(self.psql("postgres", "SELECT datname FROM pg_database").split())
        urls: dict[str, str] = {}
        for service in services:
            name = database_name(service)
            if name not in existing:
                self.psql("postgres", f'CREATE DATABASE "{name}"')
            urls[service] = self.url(name)
        return urls
