"""Stdio through railcar: terminals, binary:// and file:// log URIs, big and many outputs."""

import hashlib
import json
import os
import shlex
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import RUNTIME, devenv, eventually, remove_task, run

pytestmark = pytest.mark.integration

LOGGER = """#!/bin/sh
# A binary:// logger: argv is "file <prefix>"; fd 3 = stdout, fd 4 = stderr, fd 5 = ready.
exec 5>&-
cat <&3 > "$2.out" &
cat <&4 > "$2.err" &
wait
"""


def test_terminal(cd, image, cid) -> None:
    ctr = ["ctr", "--address", cd.address, "--namespace", cd.namespace, "run", "-t", "--rm", "--runtime", RUNTIME,
           image, cid, "sh", "-c", "tty; echo in a terminal; exit 5"]
    result = subprocess.run(["script", "-qec", shlex.join(ctr), "/dev/null"], capture_output=True, env=cd.env,
                            timeout=60, stdin=subprocess.DEVNULL)
    text = result.stdout.decode(errors="replace")
    assert "/dev/pts/" in text and "in a terminal\r" in text, text  # onlcr: the pty turned \n into \r\n
    assert result.returncode == 5


def test_binary_log_uri(cd, image, cid, tmp_path: Path) -> None:
    logger = tmp_path / "logger.sh"
    logger.write_text(LOGGER)
    logger.chmod(logger.stat().st_mode | stat.S_IXUSR)
    prefix = tmp_path / "captured"
    result = run(cd, image, cid, "sh", "-c", "echo to stdout; echo to stderr >&2",
                 ctr_flags=("--log-uri", f"binary://{logger}?file={prefix}"))
    assert result.returncode == 0, result.stderr
    assert eventually(lambda: Path(f"{prefix}.out").exists() and Path(f"{prefix}.out").read_bytes() != b"")
    assert Path(f"{prefix}.out").read_bytes() == b"to stdout\n"
    assert eventually(lambda: Path(f"{prefix}.err").read_bytes() == b"to stderr\n")


def test_file_log_uri(cd, image, cid, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "c.log"
    result = run(cd, image, cid, "sh", "-c", "echo one; echo two >&2", ctr_flags=("--log-uri", f"file://{log}"))
    assert result.returncode == 0, result.stderr
    assert sorted(log.read_bytes().splitlines()) == [b"one", b"two"]


def test_50_mb_byte_exact(cd, image, cid) -> None:
    size = 50 * 1024 * 1024
    result = run(cd, image, cid, "sh", "-c", f"yes abcdefghijklmnopqrstuvwxyz0123456789 | head -c {size}",
                 timeout=120)
    assert result.returncode == 0, result.stderr
    line = b"abcdefghijklmnopqrstuvwxyz0123456789\n"
    expected = (line * (size // len(line) + 1))[:size]
    assert len(result.stdout) == size
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(expected).digest()


@pytest.mark.parametrize("how", ["run", "exec"])
def test_a_reader_that_pauses_longer_than_the_drain_loses_nothing(cd, image, cid, how) -> None:
    """The client's reader pauses for longer than the shim waits for it at the exit (2 s) while the
    process writes 1.5 MB and exits: everything arrives, as with runc, whose process waits for
    its reader behind 64 KiB pipes (1 MiB ones let it exit, and the tail was lost)."""
    size = 1_500_000
    script = f"yes 0123456789abcdef | head -c {size}; exit 5"
    ctr = ["ctr", "--address", cd.address, "--namespace", cd.namespace]
    if how == "run":
        command = [*ctr, "run", "--rm", "--runtime", RUNTIME, image, cid, "sh", "-c", script]
    else:
        started = cd.ctr("run", "-d", "--runtime", RUNTIME, image, cid, "sleep", "1000")
        assert started.returncode == 0, started.stderr
        command = [*ctr, "task", "exec", "--exec-id", "paused", cid, "sh", "-c", script]
    try:
        result = subprocess.run(["bash", "-c", f"{shlex.join(command)} | (sleep 2.5; wc -c); echo ${{PIPESTATUS[0]}}"],
                                capture_output=True, env=cd.env, timeout=60)
    finally:
        if how == "exec":
            remove_task(cd, cid)
    assert result.stdout.split() == [str(size).encode(), b"5"], result.stderr


def test_100_quick_containers_lose_nothing(cd, image, cid) -> None:
    def one(i: int) -> tuple[int, bytes]:
        result = run(cd, image, f"{cid}-{i}", "echo", f"container {i}")
        return result.returncode, result.stdout

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(one, range(100)))
    assert results == [(0, f"container {i}\n".encode()) for i in range(100)]


def test_stdin_without_close_io_reaches_the_process(cd, image, cid) -> None:
    result = run(cd, image, cid, "sh", "-c", "head -c 3; echo", input=b"abcdef")
    assert result.stdout == b"abc\n"


def test_bad_config_fails_create_with_the_named_error(cd, image, cid, tmp_path: Path) -> None:
    rootfs = devenv.busybox_rootfs(tmp_path / "rootfs")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"ociVersion": "1.0.2", "process": {"args": [], "cwd": "/"},
                                  "root": {"path": str(rootfs)}, "linux": {"namespaces": [{"type": "mount"}]}}))
    result = cd.ctr("run", "--rm", "--runtime", RUNTIME, "--config", str(config), cid)
    assert result.returncode != 0
    assert b"process.args" in result.stderr, result.stderr
    cd.ctr("container", "rm", cid)
    assert not os.path.exists(cd.bundle(cid))
