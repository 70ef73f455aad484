"""The output file of an annotation session: durable appends, resuming, one writer at a time.

Every answer is written the moment it is given (one ``write`` then ``fsync``): Ctrl-C, a
closed terminal or a crash loses at most the question on screen. Questions this annotator
already answered in the file (matched by item id and question) are never asked again, and a
line cut short by a crash is dropped on the next start so its question comes again. An OS
lock lets one session write a file at a time: several annotators use one file each, or take
turns on a shared one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from prefcore.annotate.items import jsonl_rows
from prefcore.data.records import PreferenceRecord
from prefcore.errors import ConfigError

__all__ = ["AnnotationLog"]


def _lock(fd: int, path: str) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no POSIX locks (Windows): one session per file is on the user
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(
            f"{path} is being written by another annotation session. Give each annotator their own --out "
            "file, or wait until the other session ends.",
            field="out",
        ) from None


class AnnotationLog:
    """The output JSONL of a session: which questions are answered, and durable appends.

    Use as a context manager: entering locks the file, drops an unfinished last line (a
    write cut off by a crash; its question is asked again) and reads the answers so far.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.dropped_partial_line = False
        self._answered: set[tuple[str, str, str]] = set()
        self.groups: dict[str, dict[str, str]] = {}
        """Annotator → the group attributes their answers in the file carry."""
        self._fd: int | None = None

    def __enter__(self) -> AnnotationLog:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(fd, self.path)
            self._repair_tail(fd)
            self._read_answers()
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None

    def _repair_tail(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as file:
            data = file.read()
        if data.endswith(b"\n"):
            return
        os.ftruncate(fd, data.rfind(b"\n") + 1)
        os.fsync(fd)
        self.dropped_partial_line = True

    def _read_answers(self) -> None:
        for _, row in jsonl_rows(self.path):
            metadata = row.get("metadata")
            if not isinstance(metadata, Mapping):
                continue  # a record from elsewhere: kept, but it answers no question of a session
            keys = (row.get("annotator_id"), metadata.get("item_id"), metadata.get("question"))
            if all(isinstance(key, str) for key in keys):
                self._answered.add(keys)  # type: ignore[arg-type]
                groups = row.get("annotator_groups")
                if isinstance(groups, Mapping):
                    known = self.groups.setdefault(keys[0], {})  # type: ignore[arg-type]
                    for attribute, group in groups.items():
                        if isinstance(group, str):
                            known.setdefault(attribute, group)

    def answered(self, annotator: str, item: str, question: str) -> bool:
        return (annotator, item, question) in self._answered

    def append(self, record: PreferenceRecord) -> None:
        """Write one record as one line, then fsync: once this returns, the answer survives a crash."""
        if self._fd is None:
            raise RuntimeError("AnnotationLog.append outside its with-block.")
        metadata = record.metadata
        key = (record.annotator_id, metadata["item_id"], metadata["question"])
        if key in self._answered:
            raise RuntimeError(f"question {key} is already answered in {self.path}.")
        data = (json.dumps(record.to_dict(), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)
        self._answered.add(key)  # type: ignore[arg-type]
