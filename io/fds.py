"""Ownership of raw file descriptors, so that every exit path closes each fd exactly once."""

import os

import trio


class FdSet:
    """The fds one owner (a ProcessIO) must close; closing twice or closing a stranger's fd is a no-op.

    Why: stdio setup opens up to a dozen fds and can fail half way, and the copy loops close their
    own ends at EOF while `aclose` closes whatever is left. One registry makes both paths safe.
    """

    def __init__(self) -> None:
        self._open: set[int] = set()

    def adopt(self, fd: int) -> int:
        """Take ownership of `fd` and return it (so opens read `fd = fds.adopt(os.open(...))`)."""
        self._open.add(fd)
        return fd

    def pipe(self) -> tuple[int, int]:
        """A new (read, write) pipe pair, both close-on-exec and owned here."""
        read_end, write_end = os.pipe()
        return self.adopt(read_end), self.adopt(write_end)

    def close(self, fd: int) -> None:
        """Close `fd` if we still own it, first waking any trio task parked on it (trio requires this)."""
        if fd not in self._open:
            return
        self._open.discard(fd)
        trio.lowlevel.notify_closing(fd)
        os.close(fd)

    def close_all(self) -> None:
        for fd in sorted(self._open):
            self.close(fd)
