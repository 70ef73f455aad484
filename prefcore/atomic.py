"""Files and folders that appear whole or not at all, even when the process is killed.

Every output a run must find again after a crash (checkpoints, ``config.json``, the final
model, reward models, metrics, reports) is written through this one module:

- a file goes to a hidden temporary sibling ``.<name>.<token>.tmp``, is flushed and
  fsynced, renamed over the target with ``os.replace`` (atomic on one file system), and
  the folder is fsynced so that the rename itself survives a power cut;
- a folder is staged the same way (``.<name>.<token>.tmp``), every file and sub-folder in
  it fsynced, then renamed into place; an existing folder is first moved aside to
  ``.<name>.<token>.old`` and removed only once the new one is in place.

A kill therefore leaves the previous version (or nothing) under the real name and, at
worst, a hidden staging entry beside it. ``remove_stale_staging`` cleans those up (and
puts back a previous version whose replacement never arrived); readers never list them.

New files get mode ``0o666`` and folders ``0o777``, both less the process umask, as
``open`` and ``mkdir`` give them. ``tempfile.mkstemp``/``mkdtemp`` would make them 0600 and
0700 whatever the user's umask says, and so does safetensors' ``save_file`` (which
``save_pretrained`` uses), so files in a staged folder get their mode set before the rename.
Any ``OSError`` while writing (a full disk, a read-only folder, a quota) becomes a
``StorageError`` naming the target path, and the previous version stays in place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from typing import Any

from prefcore.errors import StorageError

__all__ = [
    "atomic_directory",
    "atomic_file",
    "atomic_write_bytes",
    "atomic_write_text",
    "current_umask",
    "fsync_directory",
    "is_staging_name",
    "remove_directory",
    "remove_stale_staging",
    "storage_cause",
]

_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")
_STAGING = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{8}\.(?P<kind>tmp|old)$")
# errors a file system gives when it cannot fsync a folder; the data itself is already synced
_NO_DIRECTORY_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM}


def _staging_path(target: Path, kind: str = "tmp") -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.{kind}")


def is_staging_name(name: str) -> bool:
    """Whether ``name`` is a staging or retired entry written by this module."""
    return _STAGING.match(name) is not None


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op where folders cannot be synced)."""
    if os.name == "nt":  # pragma: no cover - Windows has no directory handles to sync
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _NO_DIRECTORY_FSYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIRECTORY_FSYNC:
            raise
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ≥ 4.7)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it
    os.umask(mask)
    return mask


def _finish_tree(root: Path) -> None:
    """Give every file and folder under ``root`` the umask's mode, then fsync them, children first."""
    mask = current_umask()
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            os.chmod(path, 0o666 & ~mask)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(folder, 0o777 & ~mask)
        fsync_directory(Path(folder))


def storage_cause(exc: BaseException) -> OSError | None:
    """The operating-system error behind ``exc``, if any.

    Writers in other languages do not raise ``OSError``: safetensors (which
    ``save_pretrained`` uses) raises ``SafetensorError("... I/O error: No space left on
    device (os error 28)")``, so the errno is read from its message.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while isinstance(current, Exception) and id(current) not in seen:  # never a KeyboardInterrupt
        seen.add(id(current))
        if isinstance(current, OSError):
            return current
        match = _OS_ERROR_TEXT.search(str(current))
        if match:
            code = int(match.group(1))
            return OSError(code, os.strerror(code))
        current = current.__cause__  # explicit chaining only: "raise X from the OSError"
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO[Any]]:
    """Yield a handle whose content replaces ``path`` only when the block ends without error.

    Arguments:
        path: the file to write; its folder is created if needed.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding, newline: as for ``open`` in text mode.
    Raises:
        StorageError: the file could not be written (disk full, permissions); ``path`` is unchanged.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file writes with mode 'w' or 'wb', not {mode!r}.")
    target = Path(path)
    temporary = _staging_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding=encoding if text else None, newline=newline if text else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        fsync_directory(target.parent)
    except BaseException as exc:
        _remove(temporary)
        cause = None if isinstance(exc, StorageError) else storage_cause(exc)
        if cause is not None:
            raise StorageError(target, cause) from exc
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text``, whole or not at all (see ``atomic_file``)."""
    with atomic_file(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data``, whole or not at all (see ``atomic_file``)."""
    with atomic_file(path, "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder that becomes ``path`` once the block ends without error.

    Everything written into the staging folder is fsynced before the rename. An existing
    ``path`` is replaced: it is moved aside first and deleted only after the new folder is
    in place, so at every instant one complete version exists under ``path`` or beside it.

    Raises:
        StorageError: the folder could not be written; the previous ``path`` is unchanged.
    """
    final = Path(path)
    staging = _staging_path(final)
    retired: Path | None = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(final.parent, target=final.name)
        os.mkdir(staging, 0o777)
        yield staging
        _finish_tree(staging)
        if final.exists() or final.is_symlink():
            retired = _staging_path(final, "old")
            os.replace(final, retired)
        os.replace(staging, final)
        fsync_directory(final.parent)
    except BaseException as exc:
        _remove(staging)
        if retired is not None and not final.exists():
            with contextlib.suppress(OSError):  # put the previous version back
                os.replace(retired, final)
                retired = None
        cause = None if isinstance(exc, StorageError) else storage_cause(exc)
        if cause is not None:
            raise StorageError(final, cause) from exc
        raise
    if retired is not None:
        _remove(retired)


def remove_directory(path: str | os.PathLike[str]) -> None:
    """Delete a folder so that a kill midway leaves a staging entry, never a half-deleted ``path``."""
    target = Path(path)
    if not target.exists():
        return
    doomed = _staging_path(target)  # a staging name: deleted on cleanup, never restored
    os.replace(target, doomed)
    _remove(doomed)


def remove_stale_staging(folder: str | os.PathLike[str], *, target: str | None = None) -> list[Path]:
    """Clean up what a killed writer left in ``folder``; returns the entries removed or restored.

    A staging entry (``.tmp``) is deleted. A retired previous version (``.old``) is put back
    under its name when its replacement never arrived, and deleted otherwise.

    Arguments:
        folder: the folder to clean (nothing happens if it does not exist).
        target: only entries staged for this name; default: every staging entry.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    handled = []
    for entry in sorted(root.iterdir()):
        match = _STAGING.match(entry.name)
        if match is None or (target is not None and match.group("target") != target):
            continue
        original = root / match.group("target")
        if match.group("kind") == "old" and not original.exists():
            os.replace(entry, original)
        else:
            _remove(entry)
        handled.append(entry)
    return handled
