"""Where a process's stdio goes: parsing containerd's stdio strings and opening their targets.

Opening never blocks. An output FIFO is opened for writing with O_NONBLOCK, which succeeds only
once the client has it open for reading (ENXIO before): the caller waits for that, as runc's
shim does with a blocking open. Then our own reader, or, when the client never came, our reader
first (which returns at once even without a writer) and then the writer.
"""

import errno
import os
import stat
import urllib.parse
from dataclasses import dataclass
from enum import Enum

from .errors import StdioError
from .fds import FdSet
from .pump import pending


class Mode(Enum):
    """How the output streams are handled; decided by the stdout string, as containerd does."""

    NULL = "null"  # nothing given: /dev/null
    PATHS = "paths"  # FIFO (or existing regular file) paths, one per stream
    BINARY = "binary"  # one logger process receives both streams (binary:// or binary-v2://)
    FILE = "file"  # both streams appended to one file


def output_mode(stdout: str, stderr: str) -> Mode:
    """The mode for a Create/Exec's stdout/stderr strings; unknown schemes are refused here."""
    if not stdout and not stderr:
        return Mode.NULL
    scheme = urllib.parse.urlsplit(stdout).scheme if "://" in stdout else ""
    if scheme in ("", "fifo"):
        return Mode.PATHS
    if scheme in ("binary", "binary-v2"):
        return Mode.BINARY
    if scheme == "file":
        return Mode.FILE
    raise StdioError(stdout, f"unknown STDIO scheme {scheme!r} (use a FIFO path, binary:// or file://)")


def plain_path(target: str, stream: str) -> str:
    """A FIFO-mode target: a bare path (or fifo://path); any other URI here is a mistake."""
    if "://" in target:
        parts = urllib.parse.urlsplit(target)
        if parts.scheme != "fifo":
            raise StdioError(target, f"{stream}: must be a FIFO path, not a {parts.scheme}:// URI")
        target = parts.path
    if not os.path.isabs(target):
        raise StdioError(target, f"{stream}: path must be absolute")
    return target


def file_uri_path(uri: str) -> str:
    path = urllib.parse.urlsplit(uri).path
    if not os.path.isabs(path):
        raise StdioError(uri, "file:// needs an absolute path (file:///dir/name)")
    return path


@dataclass
class Sink:
    """An output target: the fd we write to, and for a FIFO our own reader of it (`reader`).

    With a reader always present, our writes never fail with EPIPE when the client goes away, and
    data waits in the FIFO until it returns. The reader also tells how much of what we wrote the
    client has not read yet (`unread`). A sink shared by stdout and stderr (same path) closes its
    writer when its last user releases it, so that a client reading sees EOF; the reader stays
    open with the rest of the process's fds.
    """

    target: str
    fd: int
    reader: int | None = None
    users: int = 0

    def release(self, fds: FdSet) -> None:
        self.users -= 1
        if self.users <= 0:
            fds.close(self.fd)

    def read_by_others(self, fds: FdSet) -> bool:
        """Whether a client holds the FIFO open for reading. Opening a FIFO for writing without
        blocking fails (ENXIO) when it has no reader, so our own reader is closed for the look; a
        writer opened first keeps what is in the FIFO, and the reader is opened again after."""
        if self.reader is None:
            return False
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            holder = os.open(f"/proc/self/fd/{self.reader}", flags)
        except OSError:
            return True  # cannot tell: waiting (a bounded time) is the safe answer
        reopen = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fds.close(self.reader)
            self.reader = None
            try:
                os.close(os.open(f"/proc/self/fd/{holder}", flags))
                found = True
            except OSError as e:
                found = e.errno != errno.ENXIO  # only ENXIO says "no reader"
            try:
                self.reader = fds.adopt(os.open(f"/proc/self/fd/{holder}", reopen))
            except OSError:  # by its path then: without our reader the rest would be lost on EPIPE
                self.reader = fds.adopt(os.open(self.target, reopen))
        except OSError:
            return True
        finally:
            os.close(holder)
        return found

    def unread(self) -> int:
        """Bytes written to the FIFO that no client has read yet (0 for other targets, and if the
        kernel will not say: waiting for the reader must never keep an exit from being reported)."""
        if self.reader is None:
            return 0
        try:
            return pending(self.reader)
        except OSError:
            return 0


def open_output_path(path: str, fds: FdSet, *, need_client: bool = False) -> Sink | None:
    """An existing FIFO (writer + our own reader) or regular file (appended to), never blocking.
    None if `need_client` and no client holds the FIFO open for reading yet (try again later)."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISFIFO(mode):
            try:
                writer = fds.adopt(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as error:
                if error.errno != errno.ENXIO:
                    raise
                if need_client:
                    return None
                reader = fds.adopt(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
                return Sink(path, fds.adopt(os.open(path, os.O_WRONLY | os.O_NONBLOCK)), reader)
            return Sink(path, writer, fds.adopt(os.open(path, os.O_RDONLY | os.O_NONBLOCK)))
        if stat.S_ISREG(mode):
            return Sink(path, fds.adopt(os.open(path, os.O_WRONLY | os.O_APPEND)))
    except FileNotFoundError as error:
        raise StdioError(path, "does not exist") from error
    except OSError as error:
        raise StdioError(path, f"cannot open for writing: {error.strerror}") from error
    raise StdioError(path, "is neither a FIFO nor a regular file")


def open_output_file(uri: str, fds: FdSet) -> Sink:
    """file:// target: created (with 0755 parents) and appended to, as containerd does."""
    path = file_uri_path(uri)
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = fds.adopt(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    except OSError as error:
        raise StdioError(uri, f"cannot create or open log file: {error.strerror}") from error
    return Sink(uri, fd)


def open_stdin_fifo(path: str, fds: FdSet) -> tuple[int, int]:
    """(reader, holder) on a stdin FIFO, both without blocking.

    `holder` is our own writer: while it is open, a client that closes or reopens its writer
    (ctr attach, containerd restart) never makes the reader see EOF. CloseIO closes it.
    """
    try:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            raise StdioError(path, "stdin must be a FIFO")
        reader = fds.adopt(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        holder = fds.adopt(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except FileNotFoundError as error:
        raise StdioError(path, "does not exist") from error
    except OSError as error:
        raise StdioError(path, f"cannot open stdin FIFO: {error.strerror}") from error
    return reader, holder
