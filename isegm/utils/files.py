"""Files: written so that a reader never sees a half-written one, and their content hashes."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import BinaryIO, Callable, List, Optional, Union

PathLike = Union[str, os.PathLike]

# Temporary files of atomic_write: ".NAME.atomic-HOST-PID-RANDOM.tmp" beside NAME. The host and
# process tell whether the writer may still be running (``stale_temp_files``).
_TEMP = re.compile(r"^\.(?P<name>.+)\.atomic-(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)-[0-9a-f]+\.tmp$")
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]
# Temporary files last written before this moment cannot belong to a write of this process.
PROCESS_START = time.time()


def temp_name(path: PathLike) -> Path:
    """A fresh temporary file name beside ``path`` for an atomic write, naming this host and process."""
    path = Path(path)
    return path.parent / f".{path.name}.atomic-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _running(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (POSIX; elsewhere assumed to run)."""
    if os.name != "posix":   # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        return True
    return True


def stale_temp_files(folder: PathLike, name: Optional[str] = None) -> List[Path]:
    """The temporary files of interrupted atomic writes in ``folder`` (of the file ``name`` only,
    when given): last written before this process started, by a process that no longer runs
    (or by another machine, whose processes cannot be checked)."""
    pattern = f".{glob.escape(name)}.atomic-*.tmp" if name else ".*.atomic-*.tmp"
    stale = []
    for path in Path(folder).glob(pattern):
        match = _TEMP.match(path.name)
        if match is None:
            continue
        try:
            old = path.stat().st_mtime < PROCESS_START
        except FileNotFoundError:   # its write just finished
            continue
        if old and not (match["host"] == _HOST and _running(int(match["pid"]))):
            stale.append(path)
    return stale


def remove_stale_temp_files(folder: PathLike, name: Optional[str] = None) -> List[Path]:
    """Remove ``stale_temp_files(folder, name)``; returns the files removed."""
    removed = []
    for path in stale_temp_files(folder, name):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def atomic_write(path: PathLike, data: Union[bytes, Callable[[BinaryIO], None]]) -> None:
    """Write ``data`` (bytes, or a function writing to a binary file) to a temporary file beside
    ``path``, flush it to disk, then rename it over ``path``: a crash leaves the old file or the
    new one, never a mix. The folder is created when missing. The temporary file is removed
    when the write fails; one left by a killed process is removed by the next write of ``path``
    (``remove_stale_temp_files``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent, path.name)
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)   # after a failure; after os.replace it is gone already


def keep_previous(path: PathLike, previous: PathLike) -> bool:
    """Make ``previous`` hold what ``path`` holds now, atomically, before ``path`` is rewritten:
    a hard link (no data copied) where the file system has them, else a copy. False when
    ``path`` does not exist."""
    path, previous = Path(path), Path(previous)
    if not path.is_file():
        return False
    tmp = temp_name(previous)
    try:
        os.link(path, tmp)
    except OSError:   # no hard links here (some network and FAT file systems)
        atomic_write(previous, lambda f: _copy_into(path, f))
        return True
    try:
        os.replace(tmp, previous)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return True


def _copy_into(source: Path, target: BinaryIO) -> None:
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            target.write(block)


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
