"""Exclusive locks on store paths, so that several processes can append to one table safely.

:func:`store_lock` serialises the writers of one object (an observation table's append and its
index update, a catalogue's read-modify-write) across threads, processes and machines:

* **local store**: an OS file lock (:class:`filelock.FileLock`, ``flock``) on ``<path>`` inside
  the store. The operating system releases it when its holder dies, even by SIGKILL.
* **S3 store**: a lock object ``<path>`` created with an exclusive write (``If-None-Match: *``,
  s3fs ``pipe_file(mode="create")``; AWS S3, SeaweedFS and MinIO honour it). The object records
  its holder (``host:pid``) and the time it was taken; it is deleted on release. A lock object
  left by a holder that died is taken over when its process is gone (same host), when it names
  this process but this process does not hold it (a release that failed because the server was
  down), or when it is older than ``stale_after`` seconds (another host). The take-over (read, delete, create again)
  is not atomic: two waiters breaking the same stale lock at the same moment could both get it,
  so keep ``stale_after`` well above the longest write.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Iterator

from obscast.components.errors import ObscastError
from obscast.components.store.storage import Store

__all__ = ["LockTimeout", "store_lock"]


class LockTimeout(ObscastError):
    """A store lock could not be taken within the timeout."""


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD: set[str] = set()  # S3 lock objects this process holds now
_HELD_LOCK = threading.Lock()


def _is_stale(info: dict, full: str, stale_after: float) -> bool:
    host, _, pid = str(info.get("owner", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) != os.getpid() and not _pid_alive(int(pid)):
            return True  # its holder died
        if int(pid) == os.getpid():
            with _HELD_LOCK:
                if full not in _HELD:
                    return True  # ours, left behind by a release that failed (the server was down)
    return time.time() - float(info.get("time", 0.0)) > stale_after


@contextlib.contextmanager
def store_lock(store: Store, path: str, timeout: float = 600.0, stale_after: float = 900.0, poll: float = 0.05) -> Iterator[None]:
    """Hold an exclusive lock named by a path inside the store.

    Parameters
    ----------
    store : Store
        Local or S3 store.
    path : str
        Lock path inside the store, e.g. ``"obs/synop.zarr.lock"``.
    timeout : float, optional
        Seconds to wait for the lock.
    stale_after : float, optional
        S3 only: seconds after which a lock object of another host is taken to be abandoned.
    poll : float, optional
        Seconds between attempts (S3; doubled up to 1 s while waiting).

    Raises
    ------
    LockTimeout
        If the lock is still held by someone else after ``timeout`` seconds (names the lock and
        its holder).
    """
    if store.is_local:
        from filelock import FileLock, Timeout

        full = store._path(path)
        store.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
        lock = FileLock(full, timeout=timeout, thread_local=False)
        try:
            lock.acquire()
        except Timeout as exc:
            raise LockTimeout(f"{store.url(path)}: lock still held by another writer after {timeout:.0f} s") from exc
        try:
            yield
        finally:
            lock.release()
        return

    full = store._path(path)
    deadline = time.monotonic() + timeout
    delay = poll
    vanished = 0  # creates refused although no lock object was there
    while True:
        body = json.dumps({"owner": _owner(), "time": time.time()}).encode()
        try:
            store.fs.pipe_file(full, body, mode="create")
            with _HELD_LOCK:
                _HELD.add(full)
            break
        except OSError as exc:
            refused = exc
            store.fs.invalidate_cache(full)
            try:
                info = json.loads(store.fs.cat_file(full))
            except FileNotFoundError:
                vanished += 1
                if vanished > 5:
                    raise refused  # the create fails for another reason than a held lock
                continue  # released meanwhile: try again at once
            except ValueError:  # not JSON: not ours to break, wait for it
                info = {}
            if info and _is_stale(info, full, stale_after):
                store.fs.rm_file(full)
                continue
            if time.monotonic() > deadline:
                raise LockTimeout(f"{store.url(path)}: lock still held by {info.get('owner', 'another writer')} after {timeout:.0f} s") from None
            time.sleep(delay)
            delay = min(2 * delay, 1.0)
    try:
        yield
    finally:
        with _HELD_LOCK:
            _HELD.discard(full)
        with contextlib.suppress(Exception):  # the server may be gone: the lock is then stale for the next writer
            store.fs.rm_file(full)
