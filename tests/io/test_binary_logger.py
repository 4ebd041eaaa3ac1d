"""binary:// loggers: the fd 3/4/5 convention, the ready handshake, the environment, and stopping."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import trio

from railcar.io import DefaultSpawner, ProcessIO, StdioError
from railcar.io.binary_logger import BinaryLogger, logger_argv
from railcar.io.fds import FdSet

from .clients import container, wait

LOGGER = """\
import json, os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # flush everything even when told to stop
out = sys.argv[sys.argv.index("out") + 1]
{ready}
streams = {{}}
for fd, name in ((3, "stdout"), (4, "stderr")):
    chunks = []
    while data := os.read(fd, 65536):
        chunks.append(data)
    streams[name] = b"".join(chunks).decode()
with open(out, "w") as f:
    env = open("/proc/self/environ").read().split("\\0")[:-1]  # as exec'd, before Python's locale coercion
    json.dump({{"argv": sys.argv[1:], "env": env, "streams": streams,
               "stdio_is_null": [os.path.samestat(os.fstat(i), os.stat(os.devnull)) for i in (0, 1, 2)]}}, f)
"""

SIGNAL_READY = "os.write(5, b'\\0'); os.close(5)"


def write_logger(tmp_path: Path, body: str) -> str:
    path = tmp_path / "logger"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("ready", [SIGNAL_READY, "os.close(5)"], ids=["byte", "eof"])
async def test_logger_receives_both_streams(tmp_path: Path, ready: str) -> None:
    logger = write_logger(tmp_path, LOGGER.format(ready=ready))
    report = tmp_path / "report.json"
    uri = f"binary://{logger}?out={report}&mode=a%20b&out=ignored"
    pio = await ProcessIO.open("", uri, uri, terminal=False, container_id="c1", namespace="ns1")
    assert pio.container_stdio is not None
    assert (pio.stdout_path, pio.stderr_path) == (uri, uri)
    writer = container("import os; os.write(1, b'out data'); os.write(2, b'err data')", pio.container_stdio)
    pio.close_container_side()
    assert await wait(writer) == 0
    await pio.drained()  # nothing of ours in flight: the logger reads the pipes itself
    await pio.aclose()  # SIGTERM is ignored; the logger exits at EOF, within the stop timeout
    result = json.loads(report.read_text())
    assert result["streams"] == {"stdout": "out data", "stderr": "err data"}
    assert sorted(result["env"]) == ["CONTAINER_ID=c1", "CONTAINER_NAMESPACE=ns1"]
    assert result["argv"] == ["out", str(report), "mode", "a b"]
    assert result["stdio_is_null"] == [True, True, True]


async def test_binary_v2_needs_a_ready_byte(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    good = write_logger(tmp_path, LOGGER.format(ready=SIGNAL_READY))
    pio = await ProcessIO.open("", f"binary-v2://{good}?out={report}", "", terminal=False)
    pio.close_container_side()
    await pio.aclose()
    assert json.loads(report.read_text())["streams"] == {"stdout": "", "stderr": ""}
    silent = tmp_path / "silent"
    silent.write_text(f"#!{sys.executable}\nimport os\nos.close(5)\n")
    silent.chmod(0o755)
    with pytest.raises(StdioError, match="closed fd 5 without signalling ready"):
        await ProcessIO.open("", f"binary-v2://{silent}", "", terminal=False)


async def test_open_waits_for_ready(tmp_path: Path) -> None:
    """The logger signals ready only after creating a marker: open() must not return before."""
    marker = tmp_path / "marker"
    logger = write_logger(
        tmp_path,
        f"import os, time\ntime.sleep(0.2)\nopen({str(marker)!r}, 'w').close()\n{SIGNAL_READY}\n"
        "while os.read(3, 65536): pass",
    )
    pio = await ProcessIO.open("", f"binary://{logger}", "", terminal=False)
    assert marker.exists()
    pio.close_container_side()
    await pio.aclose()


async def test_logger_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    logger = write_logger(
        tmp_path,
        "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"{SIGNAL_READY}\ntime.sleep(3600)",
    )
    spawner = RecordingSpawner()
    pio = await ProcessIO.open("", f"binary://{logger}", "", terminal=False, spawner=spawner)
    pio.logger_stop_timeout = 0.1
    pio.close_container_side()
    await pio.aclose()
    assert spawner.statuses == [-signal.SIGKILL]


async def test_terminal_output_goes_to_the_logger(tmp_path: Path) -> None:
    logger = write_logger(tmp_path, LOGGER.format(ready=SIGNAL_READY))
    report = tmp_path / "report.json"
    pio = await ProcessIO.open("", f"binary://{logger}?out={report}", "", terminal=True)
    assert pio.container_stdio is None
    master, slave = os.openpty()
    pio.attach_console(master)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pio.run)
        os.write(slave, b"on the tty\n")
        os.close(slave)
        await pio.drained(timeout=30)
    await pio.aclose()
    assert json.loads(report.read_text())["streams"] == {"stdout": "on the tty\r\n", "stderr": ""}


async def test_missing_logger_binary_is_named(tmp_path: Path) -> None:
    uri = f"binary://{tmp_path}/nope?a=b"
    with pytest.raises(StdioError, match="nope does not exist") as error:
        await ProcessIO.open("", uri, uri, terminal=False)
    assert error.value.target == uri


def test_argv_follows_containerd() -> None:
    argv = logger_argv("binary:///usr/bin/x?k1=v1&k2=v%2F2&k1=again")
    assert argv == ["/usr/bin/x", "k1", "v1", "k2", "v/2"]  # first value per key, unescaped
    assert logger_argv("binary://usr/bin/x") == ["/bin/x"]  # the host part is not part of the path
    with pytest.raises(StdioError, match="absolute path"):
        logger_argv("binary://")


class RecordingSpawner(DefaultSpawner):
    """The real default spawner, remembering the exit statuses it reported."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    async def wait(self, pid: int) -> int:
        status = await super().wait(pid)
        self.statuses.append(status)
        return status


async def test_default_spawner_maps_crossing_fds(tmp_path: Path) -> None:
    """child 3 <- our b and child 4 <- our a, where a and b may be 3 and 4 already."""
    a_read, a_write = os.pipe()
    b_read, b_write = os.pipe()
    spawner = DefaultSpawner()
    script = "import os; os.write(3, b'to b'); os.write(4, b'to a')"
    pid = spawner.spawn([sys.executable, "-c", script], {}, {3: b_write, 4: a_write})
    os.close(a_write)
    os.close(b_write)
    assert await spawner.wait(pid) == 0
    assert os.read(a_read, 10) == b"to a" and os.read(b_read, 10) == b"to b"
    os.close(a_read)
    os.close(b_read)
    with pytest.raises(KeyError):  # waiting twice is a programming error, not a hang
        await spawner.wait(pid)


async def test_a_spawned_logger_ignores_none_of_the_signals_python_does(tmp_path: Path) -> None:
    """Python ignores SIGPIPE and SIGXFSZ; a logger must not inherit that (past RLIMIT_FSIZE it would
    get EFBIG instead of its signal)."""
    read, write = os.pipe()
    spawner = DefaultSpawner()
    pid = spawner.spawn(["/bin/sh", "-c", "grep SigIgn /proc/$$/status >&3"], {}, {3: write})
    os.close(write)
    assert await spawner.wait(pid) == 0
    ignored = int(os.read(read, 100).split()[1], 16)
    os.close(read)
    assert ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)) == 0, hex(ignored)


class EagerReaper(DefaultSpawner):
    """Like the shim's reaper: collects a child's exit as soon as asked (`reap`), and reports it to
    `wait` only a few checkpoints later, as a reaper doing its own bookkeeping may."""

    def __init__(self) -> None:
        super().__init__()
        self._reaped: dict[int, int] = {}

    async def reap(self, pid: int) -> None:
        self._reaped[pid] = await super().wait(pid)

    async def wait(self, pid: int) -> int:
        for _ in range(5):
            await trio.lowlevel.checkpoint()
        return self._reaped.pop(pid)


async def test_a_logger_reaped_before_stop_is_never_signalled_by_pid(tmp_path: Path, monkeypatch) -> None:
    """Once reaped, the logger's pid may belong to a stranger: stop must signal through the pidfd it
    opened at spawn (which reports ESRCH), never by pid."""
    logger_path = write_logger(tmp_path, SIGNAL_READY)  # ready, then exits
    spawner = EagerReaper()
    fds = FdSet()
    out_read, out_write = fds.pipe()
    err_read, err_write = fds.pipe()
    fds_before = set(os.listdir("/proc/self/fd"))
    logger = await BinaryLogger.start(f"binary://{logger_path}", spawner, fds, stdout_read=out_read,
                                      stderr_read=err_read, env={})
    pidfds = [fd for fd in set(os.listdir("/proc/self/fd")) - fds_before
              if f"Pid:\t{logger.pid}\n" in Path(f"/proc/self/fdinfo/{fd}").read_text()]
    assert len(pidfds) == 2  # DefaultSpawner's own, and the logger's: pinned from spawn on
    await spawner.reap(logger.pid)  # the pid is free for reuse from here on
    by_pid: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: by_pid.append((pid, signum)))
    await logger.stop(timeout=0)
    assert by_pid == []
    assert set(os.listdir("/proc/self/fd")) - fds_before == set()  # the pidfd is closed
    fds.close_all()
