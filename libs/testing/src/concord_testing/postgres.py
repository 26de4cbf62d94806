"""A throwaway PostgreSQL cluster from the Debian `postgresql` package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

from concord_testing.ports import free_port

_MISSING = (
    "PostgreSQL is not installed: no initdb/pg_ctl under /usr/lib/postgresql/*/bin or on PATH. "
    "Install the Debian package `postgresql` (`make install` does this as root)."
)
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresMissingError(RuntimeError):
    pass


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL's bin directory."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name))

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if candidates:
        return candidates[-1].parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    raise PostgresMissingError(_MISSING)


class PostgresCluster:
    """initdb + pg_ctl in a temp dir, on 127.0.0.1 with trust auth, stopped and removed on exit.

    initdb refuses to run as root, so as root the server runs as the `postgres` user from a
    directory it owns. The directory is outside pytest's tmp_path because that one is private
    to the invoking user and `postgres` could not enter it.
    """

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.port = 0
        self.host = "127.0.0.1"
        self.user = "postgres"
        self._root: Path | None = None
        self._started = False
        self._options = ""

    @property
    def _as_server_user(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def root(self) -> Path:
        assert self._root is not None, "cluster not started"
        return self._root

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def _run_server_tool(self, *args: str) -> None:
        result = subprocess.run(
            [*self._as_server_user, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}{self.log_tail()}"
            )

    def start(self) -> PostgresCluster:
        self._root = Path(tempfile.mkdtemp(prefix="concord-pg-"))
        try:
            if os.geteuid() == 0:
                shutil.chown(self._root, "postgres", "postgres")
            data, sockets = self.root / "data", self.root / "sockets"
            self._run_server_tool("mkdir", str(sockets))
            self._run_server_tool(
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            self.port = free_port()
            self._options = (
                f"-p {self.port} -c listen_addresses={self.host} -k {sockets} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            self._pg_ctl("start")
            self._started = True
        except BaseException:
            self.stop()
            raise
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        self._run_server_tool(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.root / "data"),
            "-l",
            str(self.log_path),
            "-o",
            self._options,
            *extra,
            "-w",
            "-t",
            "60",
            action,
        )

    def restart(self) -> None:
        """Stop at once (as a crash would: no checkpoint) and start again on the same port and
        data: every open connection breaks, nothing committed is lost."""
        self._pg_ctl("restart", "-m", "immediate")

    def log_tail(self, lines: int = 30) -> str:
        if self._root is None:
            return ""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (FileNotFoundError, PermissionError):
            return ""

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def psql(self, database: str, sql: str) -> str:
        """Run `sql` through psql and return its unaligned output."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout.strip()

    def database(self, name: str) -> str:
        """Create database `name` and return its SQLAlchemy asyncpg URL."""
        if not _DB_NAME.fullmatch(name):
            raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")
        self.psql("postgres", f'CREATE DATABASE "{name}"')
        return self.url(name)

    def new_database(self, prefix: str = "test") -> str:
        """A fresh, uniquely named database's URL."""
        return self.database(f"{prefix}_{uuid.uuid4().hex[:12]}")

    def stop(self) -> None:
        if self._root is None:
            return
        if self._started:
            self._started = False
            subprocess.run(
                [
                    *self._as_server_user,
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.root / "data"),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                check=False,
                timeout=60,
            )
        shutil.rmtree(self._root, ignore_errors=True)
        self._root = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
