"""The daemon's log lines: logrus text format on a FIFO that may have no reader."""

import logging
import os

from railcar.shim import log as shim_log


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("railcar.shim", level, __file__, 1, message, (), None)


def test_logrus_format_with_fixed_fields() -> None:
    formatter = shim_log.LogrusFormatter({"namespace": "k8s.io", "pid": "42", "runtime": shim_log.RUNTIME})
    line = formatter.format(_record('started "c1" in 3 ms', logging.WARNING))
    assert line.startswith('time="') and line.endswith("\n")
    assert ' level=warning msg="started \\"c1\\" in 3 ms" namespace=k8s.io pid=42 ' \
           'runtime=io.containerd.railcar.v2\n' in line
    stamp = line.split('"')[1]
    assert stamp.endswith("Z") and len(stamp.split(".")[1]) == 10  # nanoseconds + Z, as logrus prints


def test_values_with_spaces_are_quoted() -> None:
    formatter = shim_log.LogrusFormatter({"bundle": "/a b"})
    assert formatter.format(_record("x")).endswith(' bundle="/a b"\n')


def test_a_full_fifo_without_reader_drops_lines_instead_of_blocking(tmp_path) -> None:
    fifo = tmp_path / "log"
    os.mkfifo(fifo)
    keeper = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # containerd's end, then containerd "stops reading"
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    handler = shim_log.FdHandler(writer)
    handler.setFormatter(shim_log.LogrusFormatter({}))
    for _ in range(5000):  # far more than the 64 KiB pipe buffer
        handler.emit(_record("x" * 100))
    os.close(keeper)
    handler.emit(_record("no reader at all"))  # EPIPE: dropped, no exception, no SIGPIPE death
    os.close(writer)
