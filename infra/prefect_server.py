"""Start and stop a local Prefect server (on SQLite or PostgreSQL) for development and tests.

``python -m obscast.infra.prefect_server --port 4200`` runs one in the foreground (``--database
postgres`` to put its database on a PostgreSQL cluster that it starts and stops); tests use
:func:`prefect_server` to get a real server on a free loopback port with its own PREFECT_HOME,
and :func:`postgres_server` for a real PostgreSQL cluster (Debian's ``postgresql`` package, whose
programs live in ``/usr/lib/postgresql/<version>/bin``).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

#: Name of the database that holds Prefect's tables in a PostgreSQL cluster of :func:`start_postgres`.
PREFECT_DATABASE = "prefect"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect_host(host: str) -> str:
    """The address a client on this machine uses for a server bound to ``host``: 127.0.0.1 for
    the wildcard addresses ``0.0.0.0`` and ``::``, else ``host`` itself."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def server_env(home: Path, database_url: str | None = None, auth_string: str | None = None) -> dict[str, str]:
    """Environment for a server (and its clients) whose state lives under ``home``.

    Parameters
    ----------
    home : Path
        PREFECT_HOME of the server.
    database_url : str, optional
        SQLAlchemy URL of Prefect's database (``postgresql+asyncpg://...``, see
        :func:`start_postgres`); None: SQLite in ``home/prefect.db``.
    auth_string : str, optional
        ``user:password`` the API requires as HTTP basic auth (Prefect's
        ``server.api.auth_string``); None: no authentication (any inherited setting is removed).
    """
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=database_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    )
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_API_AUTH_STRING", None)
    env.pop("PREFECT_SERVER_API_AUTH_STRING", None)
    if auth_string is not None:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
        env["PREFECT_API_AUTH_STRING"] = auth_string  # the server's own clients
    return env


def wait_until_up(proc: subprocess.Popen, url: str, log: Path, what: str, timeout: float, up=None) -> None:
    """Poll ``url`` until it answers (``up(url)`` returns True), or raise.

    Raises
    ------
    RuntimeError
        If ``proc`` exits or ``timeout`` seconds pass first; the message quotes the end of ``log``.
    """
    def _http_ok(u: str) -> bool:
        with urllib.request.urlopen(u, timeout=2) as r:
            return r.status == 200

    up = up or _http_ok
    deadline = time.monotonic() + timeout
    while True:
        try:
            if up(url):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.3)


def stop_process_group(pid: int, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Send ``sig`` to the process group led by ``pid`` (started with ``start_new_session=True``);
    SIGKILL it if it is still there after ``timeout`` seconds. A group already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it
            if done:
                return
        except ChildProcessError:  # not our child (a stack started by another command)
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def start_prefect_server(home: Path, port: int | None = None, timeout: float = 90.0, *, host: str = "127.0.0.1",
                         database_url: str | None = None, auth_string: str | None = None,
                         public_host: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``prefect server start`` in its own session (it outlives the caller until stopped)
    with its state (SQLite database unless ``database_url`` is given, UI build, ``server.log``)
    under ``home``.

    Parameters
    ----------
    home : Path
        PREFECT_HOME of the server.
    port : int, optional
        TCP port (a free one when None).
    timeout : float
        Seconds to wait for ``/api/health`` (the first start on PostgreSQL runs the migrations).
    host : str
        Address to bind (``127.0.0.1``; ``0.0.0.0`` for every interface).
    database_url : str, optional
        ``postgresql+asyncpg://...`` of :func:`start_postgres`; None: SQLite.
    auth_string : str, optional
        ``user:password`` every API call must carry as HTTP basic auth (clients set
        ``PREFECT_API_AUTH_STRING``); ``/api/health`` stays open.
    public_host : str, optional
        Host name in the returned URL and the UI's API address (default: ``host``, or 127.0.0.1
        for a wildcard ``host``).

    Returns
    -------
    (subprocess.Popen, str)
        The process (leader of its process group) and the API URL ``http://HOST:PORT/api``;
        the UI is at the same address without ``/api``.

    Raises
    ------
    RuntimeError
        If the server does not answer ``/api/health`` within ``timeout`` seconds (its log is
        quoted); the process is stopped first.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://{public_host or connect_host(host)}:{port}/api"
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            env={**server_env(home, database_url, auth_string), "PREFECT_UI_API_URL": url},  # the UI's own API calls
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_up(proc, f"http://{connect_host(host)}:{port}/api/health", home / "server.log", "Prefect server", timeout)
    except BaseException:
        stop_process_group(proc.pid, signal.SIGKILL)
        raise
    return proc, url


@contextlib.contextmanager
def prefect_server(home: Path, port: int | None = None, timeout: float = 90.0, *, host: str = "127.0.0.1",
                   database_url: str | None = None, auth_string: str | None = None) -> Iterator[str]:
    """Run ``prefect server start`` (see :func:`start_prefect_server` for the options) and yield
    its API URL (``http://127.0.0.1:PORT/api``).

    Raises
    ------
    RuntimeError
        If the server does not answer ``/api/health`` within ``timeout`` seconds (its log is quoted).
    """
    proc, url = start_prefect_server(home, port, timeout, host=host, database_url=database_url, auth_string=auth_string)
    try:
        yield url
    finally:
        stop_process_group(proc.pid, signal.SIGTERM, timeout=15)


def postgres_program(name: str) -> str:
    """Path of a PostgreSQL server program (``initdb``, ``pg_ctl``).

    Looked up in ``$OBSCAST_POSTGRES_BIN``, then the newest ``/usr/lib/postgresql/<version>/bin``
    (Debian's layout, not on PATH), then PATH.

    Raises
    ------
    FileNotFoundError
        If PostgreSQL is not installed.
    """
    dirs = [Path(os.environ["OBSCAST_POSTGRES_BIN"])] if os.environ.get("OBSCAST_POSTGRES_BIN") else []
    versions = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if d.parent.name.isdigit()]
    dirs += sorted(versions, key=lambda d: int(d.parent.name), reverse=True)
    for d in dirs:
        if (d / name).is_file():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: install PostgreSQL (Debian: apt-get install postgresql) or set OBSCAST_POSTGRES_BIN")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    """``cmd`` run as the ``postgres`` user when we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run_postgres(cmd: list[str], what: str, log: Path | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log is not None and log.is_file() else ""
        raise RuntimeError(f"{what} failed (exit status {proc.returncode}): {(proc.stdout + proc.stderr).strip()[-2000:]}"
                           + (f"\n{log}:\n{tail}" if tail else ""))
    return proc


def postgres_pid(pg_dir: Path) -> int | None:
    """Process id of the PostgreSQL server of the cluster in ``pg_dir/data``, or None if it is not running."""
    pidfile = Path(pg_dir) / "data" / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"postgres" in cmdline else None


def start_postgres(pg_dir: Path, port: int | None = None, timeout: float = 60.0) -> tuple[int, str]:
    """Start a PostgreSQL cluster for Prefect in ``pg_dir`` (created with ``initdb`` on first use).

    The cluster lives in ``pg_dir/data``, listens on 127.0.0.1 only (and a Unix socket in
    ``pg_dir``), requires the password of its ``postgres`` role (SCRAM-SHA-256; generated on
    first use, kept in ``pg_dir/password``, mode 0600) and holds a database ``prefect``. As root,
    the programs run as the ``postgres`` user (``runuser``), which then owns ``pg_dir``.

    Parameters
    ----------
    pg_dir : Path
        Directory of the cluster; it survives a stop, so a later start finds the same data.
    port : int, optional
        TCP port (a free one when None).
    timeout : float
        Seconds ``pg_ctl`` waits for the server to accept connections.

    Returns
    -------
    (int, str)
        The port and the SQLAlchemy URL for Prefect,
        ``postgresql+asyncpg://postgres:PASSWORD@127.0.0.1:PORT/prefect`` (for
        ``PREFECT_API_DATABASE_CONNECTION_URL``).

    Raises
    ------
    FileNotFoundError
        If PostgreSQL is not installed.
    RuntimeError
        If ``pg_dir`` is not reachable by the ``postgres`` user (a parent directory that others
        cannot enter, such as pytest's temporary directories when root), or ``initdb`` or the
        server fails (the output and ``pg_dir/postgres.log`` are quoted).
    """
    import asyncio

    import asyncpg

    pg_dir = Path(pg_dir).resolve()
    pg_dir.mkdir(parents=True, exist_ok=True)
    pg_dir.chmod(0o700)
    if os.geteuid() == 0:
        shutil.chown(pg_dir, "postgres", "postgres")
        if subprocess.run(_as_postgres(["test", "-w", str(pg_dir)])).returncode != 0:
            raise RuntimeError(f"{pg_dir}: the postgres user cannot reach this directory (a parent directory is closed to "
                               "other users, e.g. mode 0700); choose one whose parents others may enter (mode 0711 or 0755)")
    data, pwfile, log = pg_dir / "data", pg_dir / "password", pg_dir / "postgres.log"
    if not (data / "PG_VERSION").is_file():
        pwfile.write_text(secrets.token_urlsafe(24) + "\n")
        pwfile.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        _run_postgres([postgres_program("initdb"), "-D", str(data), "-U", "postgres", "-A", "scram-sha-256",
                       f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"], f"initdb of {data}")
    try:
        password = pwfile.read_text().strip()
    except OSError as exc:
        raise RuntimeError(f"{pwfile}: the password of the cluster in {data} is missing ({exc}); remove {pg_dir} to start afresh") from exc
    if postgres_pid(pg_dir) is not None:
        raise RuntimeError(f"{data}: a PostgreSQL server already runs on this cluster (pid {postgres_pid(pg_dir)}); stop it first")
    port = port or free_port()
    _run_postgres([postgres_program("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(int(timeout)),
                   "-o", f"-p {port} -k {pg_dir} -c listen_addresses=127.0.0.1", "start"],
                  f"PostgreSQL server on port {port}", log, timeout + 30)

    async def create_database() -> None:
        conn = await asyncpg.connect(user="postgres", password=password, host="127.0.0.1", port=port, database="postgres")
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PREFECT_DATABASE):
                await conn.execute(f'CREATE DATABASE "{PREFECT_DATABASE}"')
        finally:
            await conn.close()

    try:
        asyncio.run(create_database())
    except BaseException:
        stop_postgres(pg_dir)
        raise
    return port, f"postgresql+asyncpg://postgres:{urllib.parse.quote(password, safe='')}@127.0.0.1:{port}/{PREFECT_DATABASE}"


def stop_postgres(pg_dir: Path, timeout: float = 60.0) -> bool:
    """Stop the PostgreSQL server of the cluster in ``pg_dir`` (``pg_ctl stop -m fast``: open
    sessions are disconnected, the data are flushed). Returns False if it was not running.

    Raises
    ------
    RuntimeError
        If ``pg_ctl`` cannot stop it within ``timeout`` seconds.
    """
    pg_dir = Path(pg_dir).resolve()
    if postgres_pid(pg_dir) is None:
        return False
    _run_postgres([postgres_program("pg_ctl"), "-D", str(pg_dir / "data"), "-m", "fast", "-w", "-t", str(int(timeout)), "stop"],
                  f"stopping PostgreSQL in {pg_dir}", pg_dir / "postgres.log", timeout + 30)
    return True


@contextlib.contextmanager
def postgres_server(pg_dir: Path, port: int | None = None, timeout: float = 60.0) -> Iterator[str]:
    """Run a PostgreSQL cluster (see :func:`start_postgres`) and yield Prefect's database URL;
    stopped on exit (the data stay in ``pg_dir``).

    Raises
    ------
    FileNotFoundError, RuntimeError
        As :func:`start_postgres`.
    """
    _, url = start_postgres(pg_dir, port, timeout)
    try:
        yield url
    finally:
        stop_postgres(pg_dir)


@contextlib.contextmanager
def temporary_env(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables, restoring the old values afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def serve(server: contextlib.AbstractContextManager[str], message: str) -> None:
    """Run a server context until Ctrl-C, after printing ``message`` (``{url}`` is filled in)."""
    with server as url:
        print(message.format(url=url), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a local Prefect server (SQLite or PostgreSQL) on 127.0.0.1 until interrupted.")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--home", default=str(Path.home() / ".obscast" / "prefect"))
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite",
                        help="postgres: a PostgreSQL cluster in HOME/postgres, started and stopped with the server")
    args = parser.parse_args()
    home = Path(args.home)

    @contextlib.contextmanager
    def server() -> Iterator[str]:
        with contextlib.ExitStack() as stack:
            database_url = stack.enter_context(postgres_server(home / "postgres")) if args.database == "postgres" else None
            yield stack.enter_context(prefect_server(home, args.port, database_url=database_url))

    serve(server(), "Prefect API at {url}; the UI is at the same address without /api. Ctrl-C stops it.")


if __name__ == "__main__":
    main()
