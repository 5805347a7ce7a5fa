"""A lock between processes on one file (``fcntl.flock``), for stores that live in files."""

from __future__ import annotations

from typing import IO


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), held from :meth:`acquire`
    until :meth:`release`. Where ``fcntl`` does not exist (Windows) it locks nothing."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; False when another process holds it and ``blocking`` is False."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this platform
            return True
        file = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(file, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError:
            file.close()
            return False
        self._file = file
        return True

    def release(self) -> None:
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None
