"""Bad targets give a StdioError naming the target, and leave nothing open behind them."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from railcar.io import ProcessIO, StdioError


async def open_error(stdin: str, stdout: str, stderr: str, *, terminal: bool = False) -> StdioError:
    with pytest.raises(StdioError) as error:
        await ProcessIO.open(stdin, stdout, stderr, terminal=terminal)
    return error.value


async def test_unknown_scheme() -> None:
    error = await open_error("", "syslog://host/x", "")
    assert error.target == "syslog://host/x" and "unknown STDIO scheme 'syslog'" in str(error)


async def test_missing_paths(tmp_path: Path, fifo: Callable[[str], str]) -> None:
    missing = str(tmp_path / "gone")
    assert (await open_error("", missing, "")).target == missing
    assert (await open_error(missing, fifo("out"), "")).target == missing
    # stdout opened fine, stderr fails: stdout is closed again (the leak check verifies it)
    assert "does not exist" in str(await open_error("", fifo("out2"), missing))


async def test_wrong_kinds_of_path(tmp_path: Path) -> None:
    assert "neither a FIFO nor a regular file" in str(await open_error("", str(tmp_path), ""))
    (tmp_path / "plain").write_text("")
    assert "stdin must be a FIFO" in str(await open_error(str(tmp_path / "plain"), "", ""))
    assert "absolute" in str(await open_error("", "relative/fifo", ""))
    assert "not a binary:// URI" in str(await open_error("", str(tmp_path / "plain"), "binary:///bin/true"))


async def test_unwritable_targets(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    uri = f"file://{tmp_path}/file/under/a/file.log"  # a parent that is a regular file
    error = await open_error("", uri, uri)
    assert error.target == uri and "cannot create" in str(error)
    read_only = "/sys/kernel/notes"  # a regular file the kernel refuses to open for writing, even to root
    error = await open_error("", read_only, "")
    assert error.target == read_only and "cannot open for writing: Permission denied" in str(error)


async def test_file_uri_needs_absolute_path() -> None:
    assert "absolute path" in str(await open_error("", "file://", ""))


async def test_console_only_in_terminal_mode() -> None:
    pio = await ProcessIO.open("", "", "", terminal=False)
    master, slave = os.openpty()
    with pytest.raises(RuntimeError, match="attach_console"):
        pio.attach_console(master)  # and the master is closed: we owned it
    os.close(slave)
    with pytest.raises(ValueError, match="65535"):
        pio.resize(-1, 24)
    pio.close_container_side()
    await pio.aclose()
