"""Start and stop a local Prefect server (SQLite) for development and tests.

``python -m obscast.infra.prefect_server --port 4200`` runs one in the foreground; tests use
:func:`prefect_server` to get a real server on a free loopback port with its own PREFECT_HOME.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path) -> dict[str, str]:
    """Environment for a server (and its clients) whose state lives under ``home``."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    )
    env.pop("PREFECT_API_URL", None)
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


def start_prefect_server(home: Path, port: int | None = None, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Start ``prefect server start`` on 127.0.0.1 in its own session (it outlives the caller until
    stopped) with its state (SQLite database, UI build, ``server.log``) under ``home``.

    Returns
    -------
    (subprocess.Popen, str)
        The process (leader of its process group) and the API URL ``http://127.0.0.1:PORT/api``;
        the UI is at the same address without ``/api``.

    Raises
    ------
    RuntimeError
        If the server does not answer ``/api/health`` within ``timeout`` seconds (its log is
        quoted); the process is stopped first.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/api"
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env={**server_env(home), "PREFECT_UI_API_URL": url},  # the UI's own API calls
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_up(proc, url + "/health", home / "server.log", "Prefect server", timeout)
    except BaseException:
        stop_process_group(proc.pid, signal.SIGKILL)
        raise
    return proc, url


@contextlib.contextmanager
def prefect_server(home: Path, port: int | None = None, timeout: float = 90.0) -> Iterator[str]:
    """Run ``prefect server start`` on 127.0.0.1 and yield its API URL (``http://127.0.0.1:PORT/api``).

    Raises
    ------
    RuntimeError
        If the server does not answer ``/api/health`` within ``timeout`` seconds (its log is quoted).
    """
    proc, url = start_prefect_server(home, port, timeout)
    try:
        yield url
    finally:
        stop_process_group(proc.pid, signal.SIGTERM, timeout=15)


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
    parser = argparse.ArgumentParser(description="Run a local Prefect server (SQLite) until interrupted.")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--home", default=str(Path.home() / ".obscast" / "prefect"))
    args = parser.parse_args()
    serve(prefect_server(Path(args.home), args.port), "Prefect API at {url}; the UI is at the same address without /api. Ctrl-C stops it.")


if __name__ == "__main__":
    main()
