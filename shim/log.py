"""The daemon's log: logrus-style text lines on the bundle's `log` FIFO, which containerd shows verbatim.

While containerd is down nobody reads the FIFO: a blocking write would stall the event loop once the
pipe buffer fills, and a write without a reader raises SIGPIPE/EPIPE. So our end of the FIFO is
non-blocking (it is our own open file description; containerd's end is unaffected) and a line that
cannot be written is dropped.
"""

import json
import logging
import os
import time

from .info import RUNTIME_NAME as RUNTIME


def _quote(value: str) -> str:
    """logrus quotes a value only when it holds spaces, quotes or '='; json escaping matches %q closely."""
    if value and all(c.isprintable() and c not in ' "=' for c in value):
        return value
    return json.dumps(value)


class LogrusFormatter(logging.Formatter):
    """`time="..." level=info msg="..." key=value` with the shim's fixed fields appended."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self._suffix = "".join(f" {key}={_quote(value)}" for key, value in fields.items())

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        nanos = int((record.created - seconds) * 1e9)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"
        level = {"WARNING": "warning", "CRITICAL": "fatal"}.get(record.levelname, record.levelname.lower())
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return f'time="{stamp}" level={level} msg={json.dumps(message)}{self._suffix}\n'


class FdHandler(logging.Handler):
    """Writes whole lines to a raw fd and drops what the fd will not take (no reader, full pipe)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(self._fd, self.format(record).encode(errors="replace"))
        except (OSError, ValueError):
            pass


def open_fifo(bundle: str) -> int | None:
    """Our non-blocking write end of `<bundle>/log`; None without a FIFO or without a reader
    (containerd holds a read end for each live bundle, so that means the bundle is gone)."""
    try:
        return os.open(os.path.join(bundle, "log"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None


def redirect_stderr(fd: int) -> None:
    """Make `fd` this process's fd 2 (and close `fd`)."""
    os.dup2(fd, 2)
    os.close(fd)


def setup(bundle: str, namespace: str, debug: bool) -> logging.Logger:
    """Point fd 2 at `<bundle>/log` (if containerd made one) and return the shim's logger."""
    fd = open_fifo(bundle)
    if fd is not None:
        redirect_stderr(fd)
    configure(namespace, debug)
    return logging.getLogger("railcar.shim")


def configure(namespace: str, debug: bool) -> None:
    """logrus lines on fd 2 for every logger of this process (also a forker's worker, with the daemon's settings)."""
    handler = FdHandler(2)
    handler.setFormatter(LogrusFormatter({"namespace": namespace, "pid": str(os.getpid()), "runtime": RUNTIME}))
    root = logging.getLogger()  # the libraries' loggers (ttrpc server, io) land in the same stream
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.raiseExceptions = False
