"""One writer per project: `wanlora train` and `wanlora cache` hold <project>/.wanlora.lock.

The lock is an fcntl.flock on that file, which the kernel releases when the holder dies (kill
-9, preemption), so a lock left by a killed run is stale by construction: the next run takes
it, notes whose it was, and goes on. The file holds the holder's pid, host, command and start
time, so a refusal names who has the project. Where flock is not supported (some network
file systems), the file itself is the lock: it is cleared only when its pid is not running on
this host. The holder removes the file when it finishes.

Being the only writer also makes leftovers safe to delete: temporary files of a killed run
(atomic writes, half-written state folders) are removed right after the lock is taken.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import WanloraError

log = logging.getLogger(__name__)

LOCK_NAME = ".wanlora.lock"
_held: dict[Path, int] = {}  # lock path -> nesting depth in this process (train inside demo)

try:
    import fcntl
except ImportError:  # Windows: the pid-file fallback only
    fcntl = None


def lock_path(project_root: Path) -> Path:
    return Path(project_root) / LOCK_NAME


def _describe(info: dict) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return (
        f"pid {info.get('pid', '?')} on {info.get('host', '?')}, "
        f"`wanlora {info.get('command', '?')}` since {when}"
    )


def _read(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _busy(path: Path, info: dict) -> WanloraError:
    pid = info.get("pid", "?")
    return WanloraError(
        f"{path.parent} is in use by another wanlora run ({_describe(info)})",
        f"wait for it to finish or stop it (kill {pid}); if no such run exists, delete {path}",
    )


@contextlib.contextmanager
def project_lock(project_root: Path, command: str = "train") -> Iterator[Path]:
    """Hold the project's lock for the block; refuse (WanloraError naming the pid) if taken."""
    path = lock_path(project_root).absolute()
    if path in _held:  # already ours (e.g. `wanlora demo` -> run_training)
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": time.time(),
    }
    fd = _acquire_flock(path) if fcntl is not None else None
    if fd is None:
        _acquire_pidfile(path)
    try:
        data = json.dumps(me).encode()
        if fd is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        else:
            path.write_bytes(data)
        _held[path] = 1
        yield path
    finally:
        _held.pop(path, None)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still holding the flock: a waiter re-checks the inode
        if fd is not None:
            os.close(fd)


def _acquire_flock(path: Path) -> int | None:
    """The locked fd, or None where flock is unsupported; raises if another run holds it."""
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _busy(path, _read(path)) from None
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return None
            raise
        try:  # the holder unlinks the file on release: make sure we locked the live one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        old = _read(path)
        if old.get("pid"):
            log.info("cleared a stale lock from a run that is gone (%s)", _describe(old))
        return fd
    raise WanloraError(f"{path}: could not take the project lock", "run the command again")


def _acquire_pidfile(path: Path) -> None:
    """Fallback without flock: O_EXCL creation; a file whose pid is dead here is stale."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            return
        except FileExistsError:
            old = _read(path)
            same_host = old.get("host") == socket.gethostname()
            pid = old.get("pid")
            if isinstance(pid, int) and same_host and not pid_alive(pid):
                log.info("cleared a stale lock from a run that is gone (%s)", _describe(old))
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            raise _busy(path, old) from None
    raise WanloraError(f"{path}: could not take the project lock", "run the command again")


def remove_leftovers(project_root: Path, output_dir: Path, cache_dir: Path) -> list[Path]:
    """Delete temporary files a killed run left (call only while holding the lock)."""
    removed = []
    folders = [output_dir, cache_dir, cache_dir / "latents", cache_dir / "text"]
    state = output_dir / "state"
    if state.is_dir():
        folders += [p for p in state.iterdir() if p.is_dir()]
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):  # fsutil.atomic_path's temporary files
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
        for path in folder.glob(".tmp-*"):  # state.save_state's temporary folders
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run", len(removed))
    return removed
