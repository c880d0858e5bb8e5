"""The local stack: a Prefect server (on SQLite or PostgreSQL) and a SeaweedFS S3 server.

::

    python -m obscast.infra.stack start                        # SQLite, everything on 127.0.0.1
    python -m obscast.infra.stack start --database postgres    # Prefect's database on a PostgreSQL cluster in .stack/postgres
    python -m obscast.infra.stack start --host 0.0.0.0         # reachable from other machines: authentication required
    eval "$(python -m obscast.infra.stack env)"
    python -m obscast.infra.stack status
    python -m obscast.infra.stack stop      # SIGKILL to weed, SIGTERM to the Prefect server, pg_ctl stop

State (the Prefect database and UI build, the PostgreSQL cluster, the S3 data, logs and
``stack.json`` with the process ids) lives under ``.stack/`` at the repository root, so runs,
artifacts and stored objects survive a stop and start.

Authentication (``--auth``, implied by a ``--host`` that is not a loopback address): the Prefect
API requires HTTP basic auth (Prefect's ``server.api.auth_string``; clients send
``PREFECT_API_AUTH_STRING``) and SeaweedFS accepts only an S3 identity that may read, write and
list the stack's bucket and nothing else. The credentials come from ``OBSCAST_STACK_AUTH_STRING``
(``user:password``), ``OBSCAST_STACK_S3_KEY`` and ``OBSCAST_STACK_S3_SECRET`` when set, else
from an earlier start, else they are generated; they are kept in ``credentials.json`` (mode 0600)
and printed by ``env``. Without authentication (loopback only) the S3 keys are fixed local
development keys (:data:`obscast.infra.s3_server.DEV_KEY`), never credentials of a real account.
PostgreSQL always listens on 127.0.0.1 only, with a generated password.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from obscast.infra.prefect_server import (
    connect_host, is_loopback, postgres_pid, start_postgres, start_prefect_server, stop_postgres, stop_process_group, temporary_env,
)
from obscast.infra.s3_server import DEV_KEY, DEV_SECRET, bucket_identities, start_s3_server, write_private

DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".stack"
STATE = "stack.json"
CREDENTIALS = "credentials.json"
DATABASES = ("sqlite", "postgres")


def _alive(pid: int, word: str) -> bool:
    """Whether ``pid`` runs and its command line contains ``word`` (guards against reused pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return word in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def read_state(stack_dir: Path = DEFAULT_DIR) -> dict[str, Any] | None:
    """The state of a started stack (``stack.json``), or None if there is none."""
    path = stack_dir / STATE
    return json.loads(path.read_text()) if path.is_file() else None


def credentials(stack_dir: Path = DEFAULT_DIR) -> dict[str, str]:
    """The stack's credentials for authenticated mode, created on first use.

    Returns
    -------
    dict
        ``prefect_auth_string`` (``user:password`` for the Prefect API), ``s3_key`` /
        ``s3_secret`` (the S3 identity allowed on the bucket only), ``s3_admin_key`` /
        ``s3_admin_secret`` (full rights; used by the stack to create the bucket). Values from
        ``OBSCAST_STACK_AUTH_STRING``, ``OBSCAST_STACK_S3_KEY`` and ``OBSCAST_STACK_S3_SECRET``
        replace the stored or generated ones. Saved in ``<stack_dir>/credentials.json`` (mode 0600).

    Raises
    ------
    RuntimeError
        If ``OBSCAST_STACK_AUTH_STRING`` is not of the form ``user:password``, or only one of
        the two S3 variables is set.
    """
    path = stack_dir / CREDENTIALS
    creds = json.loads(path.read_text()) if path.is_file() else {}
    creds.setdefault("prefect_auth_string", f"obscast:{secrets.token_urlsafe(24)}")
    creds.setdefault("s3_key", f"obscast-{secrets.token_hex(6)}")
    creds.setdefault("s3_secret", secrets.token_urlsafe(30))
    creds.setdefault("s3_admin_key", f"obscast-admin-{secrets.token_hex(6)}")
    creds.setdefault("s3_admin_secret", secrets.token_urlsafe(30))
    auth = os.environ.get("OBSCAST_STACK_AUTH_STRING")
    if auth is not None:
        user, _, password = auth.partition(":")
        if not user or not password:
            raise RuntimeError("OBSCAST_STACK_AUTH_STRING: expected user:password (both non-empty)")
        creds["prefect_auth_string"] = auth
    key, secret = os.environ.get("OBSCAST_STACK_S3_KEY"), os.environ.get("OBSCAST_STACK_S3_SECRET")
    if (key is None) != (secret is None):
        raise RuntimeError("OBSCAST_STACK_S3_KEY and OBSCAST_STACK_S3_SECRET: expected both or neither")
    if key is not None:
        creds.update(s3_key=key, s3_secret=secret)
    write_private(path, json.dumps(creds, indent=2))
    return creds


def environment(state: dict[str, Any]) -> dict[str, str]:
    """The variables that point Prefect clients and obscast at the stack (with its credentials
    when it runs with authentication)."""
    env = {
        "PREFECT_API_URL": state["prefect"]["url"],
        "OBSCAST_STORE": f"s3://{state['bucket']}/obscast",
        "OBSCAST_STORAGE_OPTIONS": json.dumps({"endpoint_url": state["s3"]["endpoint"]}),
        "AWS_ACCESS_KEY_ID": DEV_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET,
    }
    if state.get("auth"):
        creds = json.loads(Path(state["credentials"]).read_text())
        env.update(PREFECT_API_AUTH_STRING=creds["prefect_auth_string"], AWS_ACCESS_KEY_ID=creds["s3_key"],
                   AWS_SECRET_ACCESS_KEY=creds["s3_secret"])
    return env


def exports(state: dict[str, Any]) -> str:
    """``export NAME='value'`` lines for a POSIX shell."""
    return "\n".join(f"export {k}='{v}'" for k, v in environment(state).items())


def status(stack_dir: Path = DEFAULT_DIR) -> dict[str, bool]:
    """Which services of the stack are up: ``{"prefect": bool, "s3": bool}``, plus
    ``"postgres"`` for a stack on PostgreSQL (all False when not started)."""
    state = read_state(stack_dir)
    if state is None:
        return {"prefect": False, "s3": False}
    up = {"prefect": _alive(state["prefect"]["pid"], "prefect"), "s3": _alive(state["s3"]["pid"], "weed")}
    if up["prefect"]:
        try:  # /api/health answers without credentials
            urllib.request.urlopen(state["prefect"].get("local_url", state["prefect"]["url"]) + "/health", timeout=5)
        except OSError:
            up["prefect"] = False
    if up["s3"]:
        try:
            urllib.request.urlopen(state["s3"].get("local_endpoint", state["s3"]["endpoint"]), timeout=5)
        except urllib.error.HTTPError:
            pass  # 403 for an anonymous request: it answers
        except OSError:
            up["s3"] = False
    database = state.get("database", {"kind": "sqlite"})
    if database["kind"] == "postgres":
        up["postgres"] = postgres_pid(Path(database["dir"])) is not None
    return up


def start(stack_dir: Path = DEFAULT_DIR, prefect_port: int = 4200, s3_port: int = 8333, bucket: str = "obscast", *,
          host: str = "127.0.0.1", auth: bool | None = None, database: str = "sqlite", postgres_port: int | None = None,
          public_host: str | None = None) -> dict[str, Any]:
    """Start the Prefect server (and its PostgreSQL cluster) and SeaweedFS in the background and
    create the bucket.

    Parameters
    ----------
    stack_dir : Path
        State directory.
    prefect_port, s3_port : int
        Ports of the Prefect API/UI and of the S3 endpoint.
    bucket : str
        S3 bucket of the store.
    host : str
        Address the Prefect server and the S3 endpoint bind to (PostgreSQL and SeaweedFS's
        internal servers stay on 127.0.0.1).
    auth : bool, optional
        Require credentials (see the module docstring); None: when ``host`` is not a loopback
        address.
    database : {"sqlite", "postgres"}
        Prefect's database: SQLite in ``<stack_dir>/prefect/prefect.db``, or a PostgreSQL
        cluster in ``<stack_dir>/postgres`` that the stack starts and stops.
    postgres_port : int, optional
        PostgreSQL's port on 127.0.0.1 (a free one when None).
    public_host : str, optional
        Host name clients use in the URLs (default: ``host``; this machine's name for 0.0.0.0).

    Returns
    -------
    dict
        The state (also written to ``<stack_dir>/stack.json``). A stack that is already up is
        left as it is and its state returned.

    Raises
    ------
    ValueError
        If ``database`` is not one of :data:`DATABASES`, or ``auth`` is False for a
        non-loopback ``host`` (nobody gets in uninvited).
    RuntimeError
        If a service does not come up (its log is quoted), or a half-running stack is found
        (stop it first). The services started by this call are stopped again.
    FileNotFoundError
        If ``weed`` or PostgreSQL is not installed.
    """
    from obscast.components.store.storage import Store

    if database not in DATABASES:
        raise ValueError(f"database: expected one of {DATABASES}, found {database!r}")
    if auth is None:
        auth = not is_loopback(host)
    if not auth and not is_loopback(host):
        raise ValueError(f"host {host}: serving beyond loopback requires authentication (drop --no-auth)")
    state = read_state(stack_dir)
    if state is not None:
        up = status(stack_dir)
        if all(up.values()):
            return state
        if any(up.values()):
            raise RuntimeError(f"{stack_dir}: the stack is half running ({up}): run `python -m obscast.infra.stack stop` first")
    stack_dir.mkdir(parents=True, exist_ok=True)
    public = public_host or (socket.getfqdn() if connect_host(host) != host else host)
    creds = credentials(stack_dir) if auth else None
    undo: list = []  # how to stop what was started, newest last
    try:
        database_url, db_state = None, {"kind": "sqlite", "path": str(stack_dir / "prefect" / "prefect.db")}
        if database == "postgres":
            pg_dir = stack_dir / "postgres"
            pg_port, database_url = start_postgres(pg_dir, postgres_port)
            undo.append(lambda: stop_postgres(pg_dir))
            db_state = {"kind": "postgres", "dir": str(pg_dir), "port": pg_port}
        prefect_proc, url = start_prefect_server(stack_dir / "prefect", prefect_port, 180.0 if database == "postgres" else 90.0,
                                                 host=host, database_url=database_url, public_host=public,
                                                 auth_string=creds["prefect_auth_string"] if creds else None)
        undo.append(lambda: stop_process_group(prefect_proc.pid, signal.SIGTERM))
        s3_config = None
        if creds:
            s3_config = write_private(stack_dir / "seaweedfs-s3.json", json.dumps(
                bucket_identities(bucket, creds["s3_key"], creds["s3_secret"], creds["s3_admin_key"], creds["s3_admin_secret"]), indent=2))
        s3_proc, local_endpoint = start_s3_server(stack_dir / "seaweedfs", s3_port, host=host, config=s3_config)
        undo.append(lambda: stop_process_group(s3_proc.pid, signal.SIGKILL))
        key, secret = (creds["s3_admin_key"], creds["s3_admin_secret"]) if creds else (DEV_KEY, DEV_SECRET)
        with temporary_env(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret):
            fs = Store(f"s3://{bucket}", {"endpoint_url": local_endpoint, "key": key, "secret": secret}).fs
            if not fs.exists(bucket):
                fs.mkdir(bucket)
    except BaseException:
        for stop_one in reversed(undo):
            stop_one()
        raise
    state = {
        "prefect": {"pid": prefect_proc.pid, "url": url, "ui": url.removesuffix("/api"), "home": str(stack_dir / "prefect"),
                    "local_url": f"http://{connect_host(host)}:{url.rsplit(':', 1)[1]}"},
        "s3": {"pid": s3_proc.pid, "endpoint": f"http://{public}:{local_endpoint.rsplit(':', 1)[1]}", "local_endpoint": local_endpoint,
               "dir": str(stack_dir / "seaweedfs")},
        "bucket": bucket,
        "host": host,
        "database": db_state,
        "auth": bool(auth),
        "credentials": str(stack_dir / CREDENTIALS) if auth else None,
    }
    write_private(stack_dir / STATE, json.dumps(state, indent=2))
    return state


def stop(stack_dir: Path = DEFAULT_DIR) -> bool:
    """Stop the stack: SIGKILL to weed (SIGTERM takes about 30 s), SIGTERM to the Prefect server
    (SIGKILL after 15 s), then ``pg_ctl stop -m fast`` for PostgreSQL. The data stay under
    ``stack_dir``. Returns False if none was started."""
    state = read_state(stack_dir)
    if state is None:
        return False
    if _alive(state["s3"]["pid"], "weed"):
        stop_process_group(state["s3"]["pid"], signal.SIGKILL)
    if _alive(state["prefect"]["pid"], "prefect"):
        stop_process_group(state["prefect"]["pid"], signal.SIGTERM, timeout=15)
    database = state.get("database", {"kind": "sqlite"})
    if database["kind"] == "postgres":
        stop_postgres(Path(database["dir"]))
    (stack_dir / STATE).unlink()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m obscast.infra.stack", description="Start, inspect or stop the local stack "
                                     "(Prefect server on SQLite or PostgreSQL, and SeaweedFS S3).")
    parser.add_argument("action", choices=["start", "stop", "status", "env"])
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="state directory (default: .stack/ at the repository root)")
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--s3-port", type=int, default=8333)
    parser.add_argument("--bucket", default="obscast")
    parser.add_argument("--database", choices=DATABASES, default="sqlite",
                        help="Prefect's database: sqlite (default) or postgres (a cluster in DIR/postgres, started and stopped with the stack)")
    parser.add_argument("--postgres-port", type=int, default=None, help="PostgreSQL port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the Prefect server and S3 bind to (default 127.0.0.1; 0.0.0.0: every interface, implies --auth)")
    parser.add_argument("--public-host", default=None, help="host name in the printed URLs (default: --host, or this machine's name for 0.0.0.0)")
    parser.add_argument("--auth", action=argparse.BooleanOptionalAction, default=None,
                        help="require credentials for the Prefect API and S3 (default: on when --host is not a loopback address)")
    args = parser.parse_args(argv)
    stack_dir = Path(args.dir).resolve()
    if args.action == "start":
        if read_state(stack_dir) is not None and all(status(stack_dir).values()):
            print("already running")
        try:
            state = start(stack_dir, args.prefect_port, args.s3_port, args.bucket, host=args.host, auth=args.auth,
                          database=args.database, postgres_port=args.postgres_port, public_host=args.public_host)
        except (RuntimeError, FileNotFoundError, ValueError) as exc:
            print(f"infra.stack: error: {exc}", file=sys.stderr)
            return 1
        database = state.get("database", {"kind": "sqlite"})
        print(f"Prefect server and UI: {state['prefect']['ui']}  (pid {state['prefect']['pid']}, database: "
              f"{'PostgreSQL on 127.0.0.1:' + str(database['port']) if database['kind'] == 'postgres' else 'SQLite'})\n"
              f"S3 (SeaweedFS): {state['s3']['endpoint']}, bucket {state['bucket']}  (pid {state['s3']['pid']})\n"
              f"State and logs in {stack_dir}.")
        if state.get("auth"):
            print(f"Authentication is on: the credentials are in {state['credentials']} (mode 0600). Point obscast and Prefect at the\n"
                  f"stack with:\n\n    eval \"$(python -m obscast.infra.stack env --dir {stack_dir})\"\n\n"
                  "(on another machine, copy those exports there). The UI asks for the Prefect auth string (PREFECT_API_AUTH_STRING).")
        else:
            print("Point obscast and Prefect at the stack with (local development keys):\n")
            print(exports(state))
        return 0
    if args.action == "stop":
        print("stopped" if stop(stack_dir) else f"no stack started in {stack_dir}")
        return 0
    state = read_state(stack_dir)
    if args.action == "env":
        if state is None:
            print(f"infra.stack: error: no stack started in {stack_dir} (run `python -m obscast.infra.stack start`)", file=sys.stderr)
            return 1
        print(exports(state))
        return 0
    up = status(stack_dir)
    if state is None:
        print(f"not started ({stack_dir})")
    else:
        database = state.get("database", {"kind": "sqlite"})
        print(f"prefect {'up' if up['prefect'] else 'DOWN'}  {state['prefect']['ui']}  pid {state['prefect']['pid']}"
              f"{'  (auth)' if state.get('auth') else ''}\n"
              f"s3      {'up' if up['s3'] else 'DOWN'}  {state['s3']['endpoint']}  bucket {state['bucket']}  pid {state['s3']['pid']}")
        if database["kind"] == "postgres":
            print(f"postgres {'up' if up['postgres'] else 'DOWN'}  127.0.0.1:{database['port']}  {database['dir']}")
    return 0 if all(up.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
