"""Start and stop a local Prefect server (SQLite) for development and tests.

``python -m infra.prefect_server --port 4200`` runs one in the foreground; tests use
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


@contextlib.contextmanager
def prefect_server(home: Path, port: int | None = None, timeout: float = 90.0) -> Iterator[str]:
    """Run ``prefect server start`` on 127.0.0.1 and yield its API URL (``http://127.0.0.1:PORT/api``).

    Raises
    ------
    RuntimeError
        If the server does not answer ``/api/health`` within ``timeout`` seconds (its log is quoted).
    """
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


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
