"""What the container sees: mounts, masked and read-only paths, fds, users, namespaces."""

import ctypes
import json
import os
import shutil
import select
import signal
import stat
import subprocess
import sys

import pytest

from railcar.runtime import Container, RuntimeFailure
from railcar.runtime import syscalls as sc

from .conftest import create_captured, exec_captured, finish, read_console, run_container, wait_for


def _mountinfo(output: str) -> dict[str, tuple[str, str]]:
    """mount point -> (per-mount options, fs type), last mount on a point wins."""
    out = {}
    for line in output.splitlines():
        fields = line.split()
        out[fields[4]] = (fields[5], fields[fields.index("-") + 1])
    return out


def test_mounts_exactly_as_specified(make_bundle, state_root) -> None:
    bundle = make_bundle(["cat", "/proc/self/mountinfo"])
    ran = run_container(bundle, state_root)
    assert ran.status == 0
    points = [line.split()[4] for line in ran.output.splitlines()]
    spec_points = [m["destination"] for m in bundle.config["mounts"]]
    # The spec's mounts, in order, right after the root; cgroup hierarchies under theirs.
    assert points[0] == "/"
    assert [p for p in points if p in spec_points] == spec_points
    assert all(p == "/" or p.startswith(("/proc", "/dev", "/sys")) for p in points)
    info = _mountinfo(ran.output)
    assert info["/"][0].startswith("ro")
    assert info["/sys"] == (info["/sys"][0], "sysfs") and info["/sys"][0].startswith("ro")
    assert info["/dev"][1] == "tmpfs" and info["/dev/pts"][1] == "devpts"
    assert info["/dev/mqueue"][1] == "mqueue" and "nodev" in info["/dev/shm"][0]
    assert info["/sys/fs/cgroup/memory"][0].startswith("ro")


def test_masked_and_readonly_paths(make_bundle, state_root) -> None:
    # /proc/kcore only exists with CONFIG_PROC_KCORE; check every masked file the host has.
    masked = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(p)]
    assert os.path.getsize("/proc/keys") == 0 and open("/proc/keys").read()  # real content
    bundle = make_bundle(["sh", "-c", "".join(f"cat {p} | wc -c; " for p in masked)
                          + "ls /sys/firmware | wc -l; "
                          "grep ' /sys/firmware ' /proc/self/mountinfo | sed 's/.* - //'; "
                          "echo 1 > /proc/sys/kernel/domainname && echo writable"])
    ran = run_container(bundle, state_root)
    lines = ran.output.splitlines()
    assert lines[:len(masked) + 1] == ["0"] * (len(masked) + 1)
    # a masked directory: an empty read-only tmpfs with no options of ours (size=0 would be no limit)
    assert lines[len(masked) + 1].split()[:2] == ["tmpfs", "tmpfs"]
    options = lines[len(masked) + 1].split()[2].split(",")
    assert "ro" in options and not [o for o in options if o.startswith("size=")]
    assert "writable" not in ran.output and "Read-only file system" in ran.output


def test_only_stdio_fds_and_no_host_cwd(make_bundle, state_root) -> None:
    # A host fd the caller forgot to mark close-on-exec must not reach the container.
    leaked = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(leaked, True)
    try:
        bundle = make_bundle(["sh", "-c", "ls /proc/$$/fd; pwd; readlink /proc/$$/cwd"])
        ran = run_container(bundle, state_root)
    finally:
        os.close(leaked)
    assert ran.output.split() == ["0", "1", "2", "/", "/"]


@pytest.mark.cgroup_v2   # also in the v2 guest, whose kernel has /proc/kcore (this host's has not)
def test_devices_and_dev_links(make_bundle, state_root) -> None:
    """The spec's devices, the default ones, and runc's links: /dev/core only where /proc/kcore is."""
    def edit(c: dict) -> None:
        # /dev/ptmx as a privileged spec lists it (the host's node): the link to pts/ptmx still, as in runc
        c["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                  "fileMode": 0o600, "uid": 0, "gid": 0},
                                 {"path": "/dev/ptmx", "type": "c", "major": 5, "minor": 2, "fileMode": 0o666}]

    bundle = make_bundle(["sh", "-c", "ls -l /dev/fuse /dev/null /dev/zero | cut -c1-10; "
                                      "readlink /dev/fd; readlink /dev/ptmx; readlink /dev/core; "
                                      "echo hi > /dev/null && head -c 3 /dev/zero | wc -c"],
                         edit=edit)
    ran = run_container(bundle, state_root)
    core = ["/proc/kcore"] if os.path.exists("/proc/kcore") else []
    assert ran.output.split() == ["crw-------", "crw-rw-rw-", "crw-rw-rw-", "/proc/self/fd",
                                  "pts/ptmx", *core, "3"]


def test_a_bound_dev_is_left_as_it_is(make_bundle, state_root, tmp_path) -> None:
    """A directory of the host's bound at /dev (privileged pods bind the host's /dev) gets no node,
    link or directory of the runtime's, not even the spec's devices: runc sets up no /dev then."""
    host_dev = tmp_path / "host-dev"
    host_dev.mkdir()
    os.mknod(host_dev / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))   # masked files are bound to it

    def edit(c: dict) -> None:
        c["mounts"] = [m for m in c["mounts"] if not m["destination"].startswith("/dev")]
        c["mounts"].append({"destination": "//dev/", "type": "bind", "source": str(host_dev), "options": ["rbind"]})
        c["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]

    ran = run_container(make_bundle(["sh", "-c", "ls -a /dev"], edit=edit), state_root)
    assert ran.output.split() == [".", "..", "null"]
    assert os.listdir(host_dev) == ["null"]


def test_a_mount_the_kernel_refuses_names_its_options(make_bundle, state_root) -> None:
    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["bogusopt"]})

    with pytest.raises(RuntimeFailure, match=r"mounts\[7\] \(tmpfs on /t\): .*Invalid argument \(options: bogusopt\)"):
        run_container(make_bundle(["true"], edit=edit), state_root)


def test_a_device_over_a_file_that_is_not_one_fails_create_and_keeps_the_file(make_bundle, state_root) -> None:
    """runtime-spec: an error, not a replaced /etc/passwd in the image."""
    def edit(c: dict) -> None:
        c["linux"]["devices"] = [{"path": "/etc/passwd", "type": "c", "major": 1, "minor": 3}]

    bundle = make_bundle(["true"], edit=edit)
    before = open(f"{bundle.rootfs}/etc/passwd").read()
    with pytest.raises(RuntimeFailure, match=r"linux.devices\[0\] \(/etc/passwd\): something that is not"):
        run_container(bundle, state_root)
    assert open(f"{bundle.rootfs}/etc/passwd").read() == before


def test_a_program_only_capabilities_let_the_user_run_is_run(make_bundle, state_root) -> None:
    """A root-only (0700) program, a non-root user with CAP_DAC_OVERRIDE: execve allows it, so create does too."""
    def edit(c: dict) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000}

    bundle = make_bundle(["/opt/id", "-u"], edit=edit, copy_binary=True)
    os.makedirs(f"{bundle.rootfs}/opt")
    shutil.copy2(f"{bundle.rootfs}/bin/busybox", f"{bundle.rootfs}/opt/id")
    os.chmod(f"{bundle.rootfs}/opt/id", 0o700)
    ran = run_container(bundle, state_root)
    assert (ran.status, ran.output.split()) == (0, ["1000"]), ran


def test_a_non_root_process_can_open_its_own_stdio_again(make_bundle, state_root) -> None:
    """Images that log to /dev/stdout as a non-root user: the pipes are the user's, as runc hands them over."""
    script = "echo plain; echo out > /dev/stdout; echo err > /dev/stderr; stat -L -c %u /proc/self/fd/1"

    def edit(c: dict) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000}

    bundle = make_bundle(["sh", "-c", script], edit=edit)
    ran = run_container(bundle, state_root)
    assert (ran.status, ran.output.split()) == (0, ["plain", "out", "err", "1000"]), ran
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    try:
        ran = exec_captured(container, {"args": ["sh", "-c", script], "cwd": "/", "user": {"uid": 1001, "gid": 1001}})
    finally:
        container.kill(signal.SIGKILL)
        finish(container, created)
    assert (ran.status, ran.output.split()) == (0, ["plain", "out", "err", "1001"]), ran


def test_a_user_namespaced_process_can_open_its_own_stdio_again(make_bundle, state_root) -> None:
    """The pipes go to the user's host uid: inside the namespace their owner (host root) is not mapped."""
    def edit(c: dict) -> None:
        _user_namespaced(c)
        c["process"]["user"] = {"uid": 1000, "gid": 1000}

    bundle = make_bundle(["sh", "-c", "echo out > /dev/stdout; stat -L -c %u /proc/self/fd/1"], edit=edit,
                         copy_binary=True)
    _give_rootfs_to(bundle, 100000)
    ran = run_container(bundle, state_root)
    assert (ran.status, ran.output.split()) == (0, ["out", "1000"]), ran


def test_process_user_cwd_env_rlimits(make_bundle, state_root) -> None:
    def edit(c: dict) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 7],
                                "umask": 0o077}
        c["process"]["cwd"] = "/work/dir"
        c["process"]["env"].append("GREETING=hello world")
        c["process"]["oomScoreAdj"] = 123
        c["root"]["readonly"] = False

    bundle = make_bundle(["sh", "-c", "id -u; id -g; id -G; pwd; echo $GREETING; umask; "
                                      "ulimit -n; cat /proc/self/oom_score_adj"], edit=edit)
    ran = run_container(bundle, state_root)
    assert ran.output.splitlines() == ["1000", "1000", "1000 5 7", "/work/dir", "hello world",
                                       "0077", "1024", "123"]


@pytest.mark.parametrize("user, env, home", [(0, [], "/root"), (1000, [], "/home/app"), (4242, [], "/"),
                                              (1000, ["HOME=/mine"], "/mine")])
def test_home_comes_from_etc_passwd_unless_the_env_has_one(make_bundle, state_root, user, env, home) -> None:
    """As runc sets it, for the init and for an exec."""
    def edit(c: dict) -> None:
        c["process"]["user"] = {"uid": user, "gid": user}
        c["process"]["env"] += env

    bundle = make_bundle(["sh", "-c", "echo $HOME; sleep 100"], edit=edit)
    with open(os.path.join(bundle.rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nbroken line\napp:x:1000:1000::/home/app:/bin/sh\n")
    os.chmod(os.path.join(bundle.rootfs, "etc", "passwd"), 0o600)  # read as root, as runc reads it
    container, created = create_captured(bundle, state_root)
    container.start()
    init_home = created.read_until("\n")   # before the kill below
    ran = exec_captured(container, {"args": ["sh", "-c", "echo $HOME"], "cwd": "/", "env": env,
                                    "user": {"uid": user, "gid": user}})
    container.kill(signal.SIGKILL)
    finish(container, created)
    assert (init_home.split(), ran.output.split()) == ([home], [home])


def _bounded_by_cap_sys_resource() -> bool:
    """Whether this process may hold CAP_SYS_RESOURCE (bit 24 of its bounding set)."""
    with open("/proc/self/status") as f:
        bounding = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    return bool(bounding >> 24 & 1)


@pytest.mark.skipif(_bounded_by_cap_sys_resource(),
                    reason="needs a host without CAP_SYS_RESOURCE (as CI's): with it, these settings work")
@pytest.mark.parametrize("setting, field", [
    ({"oomScoreAdj": -998}, r"process\.oomScoreAdj: cannot set -998"),  # CRI's pause container asks for it
    ({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1 << 30}]},
     r"process\.rlimits\[0\]: cannot set RLIMIT_NOFILE"),
])
def test_a_setting_the_host_forbids_fails_create_naming_it(make_bundle, state_root, setting, field) -> None:
    bundle = make_bundle(["true"], edit=lambda c: c["process"].update(setting))
    with pytest.raises(RuntimeFailure, match=field + ".*CAP_SYS_RESOURCE"):
        Container.create(bundle.id, bundle.path, root=state_root)
    assert not os.path.exists(os.path.join(state_root, bundle.id))


@pytest.mark.cgroup_v2   # also in the v2 guest, whose root holds CAP_SYS_RESOURCE
@pytest.mark.skipif(not _bounded_by_cap_sys_resource(), reason="needs CAP_SYS_RESOURCE (the v2 guest has it)")
def test_a_user_namespaced_container_may_ask_for_an_oom_score_below_its_callers(make_bundle, state_root) -> None:
    """A score written with CAP_SYS_RESOURCE is also the floor of the writer and its children, and
    only that capability in the host's user namespace goes below it: a shim daemon's processes run
    at containerd's score + 1, and a user-namespaced pod's sandbox asks for CRI's -998. So the score
    is written before the user namespace, as runc writes it."""
    with open("/proc/self/oom_score_adj") as f:
        own = int(f.read())
    if own >= 1000:
        pytest.skip("this process's OOM score cannot be raised")

    def edit(c: dict) -> None:
        _user_namespaced(c)
        c["process"]["oomScoreAdj"] = own

    bundle = make_bundle(["cat", "/proc/self/oom_score_adj"], edit=edit, copy_binary=True)
    _give_rootfs_to(bundle, 100000)
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(own + 1))   # our floor too, now
    try:
        ran = run_container(bundle, state_root)
    finally:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(own))
    assert (ran.status, ran.output.split()) == (0, [str(own)]), ran.output


@pytest.mark.cgroup_v2   # the v2 guest only: the limit is the whole machine's while it is 0
@pytest.mark.skipif(not os.environ.get("V2GUEST_KIT"), reason="changes a machine-wide limit for a moment: "
                    "runs only in the throwaway cgroup v2 guest (../shared/tools/cgroup2-guest sets V2GUEST_KIT)")
@pytest.mark.parametrize("limit, kinds", [("max_user_namespaces", "user"),
                                          ("max_mnt_namespaces", "ipc, mount, network, pid, uts")])
def test_a_namespace_the_kernel_refuses_is_named(make_bundle, state_root, limit, kinds) -> None:
    bundle = make_bundle(["true"], edit=_user_namespaced, copy_binary=True)
    _give_rootfs_to(bundle, 100000)
    with open(f"/proc/sys/user/{limit}", "r+") as f:
        old = f.read()
        f.seek(0)
        f.write("0")
        f.flush()
        try:
            with pytest.raises(RuntimeFailure, match=f"linux.namespaces: cannot make new {kinds} namespaces: "
                                                     "No space left on device"):
                Container.create(bundle.id, bundle.path, root=state_root)
        finally:
            f.seek(0)
            f.write(old)
    assert not os.path.exists(os.path.join(state_root, bundle.id))


def test_an_unlimited_rlimit_as_configs_write_it(make_bundle, state_root) -> None:
    unlimited = 2**64 - 1  # RLIM_INFINITY in config.json (docker --ulimit core=-1)
    rlimit = {"type": "RLIMIT_CORE", "soft": unlimited, "hard": unlimited}
    bundle = make_bundle(["sh", "-c", "ulimit -c"], edit=lambda c: c["process"].update(rlimits=[rlimit]))
    assert run_container(bundle, state_root).output.split() == ["unlimited"]


def test_cwd_symlink_stays_inside_rootfs(make_bundle, state_root, tmp_path) -> None:
    host_dir = tmp_path / "host-side"
    host_dir.mkdir()

    def edit(c: dict) -> None:
        c["process"]["cwd"] = "/escape/sub"
        c["root"]["readonly"] = False

    bundle = make_bundle(["pwd"], edit=edit)
    os.symlink(str(host_dir), os.path.join(bundle.rootfs, "escape"))
    ran = run_container(bundle, state_root)
    assert ran.status == 0
    assert os.listdir(host_dir) == []
    assert os.path.isdir(os.path.join(bundle.rootfs, str(host_dir).lstrip("/"), "sub"))


def test_mount_target_symlink_cannot_reach_host(make_bundle, state_root, tmp_path) -> None:
    host_dir = tmp_path / "host-target"
    host_dir.mkdir()

    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/evil/data", "type": "tmpfs", "source": "tmpfs"})

    bundle = make_bundle(["sh", "-c", "grep -c ' /evil/data ' /proc/self/mountinfo"], edit=edit)
    os.symlink(str(host_dir), os.path.join(bundle.rootfs, "evil"))
    ran = run_container(bundle, state_root)
    assert ran.output.split() == ["0"]   # the mount landed on the resolved, in-root path
    assert os.listdir(host_dir) == []
    assert os.path.isdir(os.path.join(bundle.rootfs, str(host_dir).lstrip("/"), "data"))


def test_user_namespace_uid_map(make_bundle, state_root) -> None:
    bundle = make_bundle(["sh", "-c", "cat /proc/self/uid_map; id -u; echo > /dev/null && "
                                      "echo devnull-ok"], edit=_user_namespaced, copy_binary=True)
    _give_rootfs_to(bundle, 100000)
    ran = run_container(bundle, state_root)
    assert ran.output.split() == ["0", "100000", "65536", "0", "devnull-ok"]


@pytest.mark.parametrize("userns", [False, True])
def test_a_new_network_namespace_has_its_loopback_up(make_bundle, state_root, userns) -> None:
    """As runc: CNI configurations (nerdctl's) leave lo to the runtime, and 127.0.0.1 must work."""
    # Nothing listens on port 1: refused when lo is up, "Network is unreachable" when it is down.
    bundle = make_bundle(["sh", "-c", "ip -o link show lo; nc -w 1 127.0.0.1 1 2>&1"],
                         edit=_user_namespaced if userns else None, copy_binary=userns)
    if userns:
        _give_rootfs_to(bundle, 100000)
    ran = run_container(bundle, state_root)
    flags = ran.output.split("<", 1)[1].split(">", 1)[0].split(",")
    assert "UP" in flags and "Connection refused" in ran.output, ran.output


def test_join_network_namespace_by_path(make_bundle, state_root) -> None:
    first = make_bundle(["sleep", "100"])
    container, created = create_captured(first, state_root)
    try:
        netns = f"/proc/{created.result.pid}/ns/net"
        inode = os.stat(netns).st_ino

        def edit(c: dict) -> None:
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                        if n["type"] != "network"] + [
                {"type": "network", "path": netns}]

        second = make_bundle(["sh", "-c", "readlink /proc/self/ns/net; "
                                          "ip -o link | cut -d: -f2"], edit=edit)
        ran = run_container(second, state_root)
        assert ran.output.split() == [f"net:[{inode}]", "lo"]
    finally:
        container.kill(signal.SIGKILL)
        finish(container, created)


def test_sysctl_and_domainname(make_bundle, state_root) -> None:
    def edit(c: dict) -> None:
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
        c["domainname"] = "example.org"

    bundle = make_bundle(["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward "
                                      "/proc/sys/kernel/domainname"],
                         edit=edit)
    ran = run_container(bundle, state_root)
    assert ran.output.split() == ["1", "example.org"]


def test_exec_with_terminal(make_bundle, state_root) -> None:
    bundle = make_bundle(["sleep", "100"])
    container, created = create_captured(bundle, state_root)
    container.start()
    result = container.exec({"args": ["tty"], "cwd": "/"}, terminal=True)
    out = read_console(result.console_fd)
    assert wait_for(result.pid) == 0
    assert out.strip().startswith("/dev/pts/")
    # A non-root user's terminal is theirs, in the tty group devpts gives it (as runc).
    result = container.exec({"args": ["sh", "-c", "stat -c %u:%g $(tty)"], "cwd": "/",
                             "user": {"uid": 1000, "gid": 1000}}, terminal=True)
    out = read_console(result.console_fd)
    assert wait_for(result.pid) == 0
    assert out.split() == ["1000:5"]
    container.kill(signal.SIGKILL)
    finish(container, created)


@pytest.mark.parametrize("userns", [False, True])
def test_time_and_cgroup_namespaces(make_bundle, state_root, userns) -> None:
    """With a user namespace too, the offsets are written by the caller, as runc's parent writes
    them: the helper, not dumpable, may not open its own /proc/self/timens_offsets as the user
    namespace's root."""
    def edit(c: dict) -> None:
        c["linux"]["namespaces"] += [{"type": "time"}, {"type": "cgroup"}]
        c["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}
        if userns:
            _user_namespaced(c)

    bundle = make_bundle(["sh", "-c", "cut -d. -f1 /proc/uptime; grep -c ':/$' /proc/self/cgroup;"
                                      " wc -l < /proc/self/cgroup"], edit=edit)
    if userns:
        _give_rootfs_to(bundle, 100000)
    ran = run_container(bundle, state_root)
    uptime, at_root, lines = ran.output.split()
    assert int(uptime) >= 86400 * 365
    assert at_root == lines   # every hierarchy shows the container's cgroup as its root


def test_recursive_mount_options_reach_the_submounts_of_a_bind(make_bundle, state_root, tmp_path) -> None:
    """rro and friends (runc's), through mount_setattr: a plain ro would leave the submount writable."""
    volume = tmp_path / "volume"
    (volume / "inner").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(volume / "inner")], check=True)
    try:
        def edit(c: dict) -> None:
            c["mounts"].append({"destination": "/vol", "type": "bind", "source": str(volume),
                                "options": ["rbind", "rro", "rnosuid"]})

        ran = run_container(make_bundle(["sh", "-c", "touch /vol/a /vol/inner/b 2>/dev/null; cat /proc/self/mountinfo"],
                                        edit=edit), state_root)
        assert sorted(os.listdir(volume)) == ["inner"] and os.listdir(volume / "inner") == []
    finally:
        subprocess.run(["umount", str(volume / "inner")], check=True)
    mounts = _mountinfo(ran.output)
    for point in ("/vol", "/vol/inner"):
        assert {"ro", "nosuid"} <= set(mounts[point][0].split(",")), (point, mounts[point])


def test_shared_rootfs_propagation(make_bundle, state_root) -> None:
    def edit(c: dict) -> None:
        c["linux"]["rootfsPropagation"] = "rshared"

    bundle = make_bundle(["awk", '$5 == "/" && / shared:/ { n++ } END { print n + 0 }',
                          "/proc/self/mountinfo"], edit=edit)
    ran = run_container(bundle, state_root)
    assert ran.output.split() == ["1"]


@pytest.mark.parametrize("propagation", ["rshared", "shared", "rslave", "rprivate"])
def test_rootfs_propagation_on_a_host_whose_mounts_are_shared(make_bundle, state_root, propagation) -> None:
    """systemd makes every mount shared, and CRI asks for rshared when a pod has a Bidirectional
    mount. This host's mounts are private: the runtime runs in a mount namespace where they are shared."""
    ran = _run_on_a_shared_host(make_bundle, state_root, propagation, "rootfs")
    assert (ran["status"], ran["output"].split()) == (0, ["1" if "shared" in propagation else "0"]), ran


@pytest.mark.parametrize("rootfs", ["root fs", "root\u00a0fs"])
def test_a_rootfs_whose_path_has_a_space_on_a_shared_host(make_bundle, state_root, rootfs) -> None:
    """The mount table escapes a space in a path, and leaves a no-break space as it is: either way the
    rootfs's own mount is still found and made private."""
    ran = _run_on_a_shared_host(make_bundle, state_root, "rshared", rootfs)
    assert (ran["status"], ran["output"].split()) == (0, ["1"]), ran


def _run_on_a_shared_host(make_bundle, state_root: str, propagation: str, rootfs: str) -> dict:
    """Run a container that counts its shared root mounts, in a mount namespace whose mounts are
    shared, with its rootfs a mount of its own at `rootfs` in the bundle (as containerd's snapshot is)."""
    def edit(c: dict) -> None:
        c["linux"]["rootfsPropagation"] = propagation
        c["root"]["path"] = rootfs

    bundle = make_bundle(["awk", '$5 == "/" && / shared:/ { n++ } END { print n + 0 }',
                          "/proc/self/mountinfo"], edit=edit)
    driver = os.path.join(os.path.dirname(__file__), "sealed_driver.py")
    script = 'mkdir -p "$1/$2" && mount --bind "$1/rootfs" "$1/$2" && shift 2 && exec "$@"'
    done = subprocess.run(["unshare", "--mount", "--propagation", "shared", "sh", "-c", script, "-", bundle.path,
                           rootfs, sys.executable, driver, bundle.path, bundle.id, state_root],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_exec_into_user_namespaced_container(make_bundle, state_root) -> None:
    bundle = make_bundle(["sleep", "100"], edit=_user_namespaced, copy_binary=True)
    _give_rootfs_to(bundle, 100000)
    container, created = create_captured(bundle, state_root)
    container.start()
    ran = exec_captured(container, {"args": ["sh", "-c", "id -u; cat /proc/self/uid_map"],
                                    "cwd": "/", "user": {"uid": 0, "gid": 0}})
    assert ran.status == 0
    assert ran.output.split() == ["0", "0", "100000", "65536"]
    container.kill(signal.SIGKILL)
    finish(container, created)


def _user_namespaced(c: dict) -> None:
    """A user namespace mapping the container's ids 0-65535 to the host's 100000-165535 (no cgroup
    mount: the host's hierarchies are not the namespace's to mount)."""
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["mounts"] = [m for m in c["mounts"] if m["type"] != "cgroup"]


def _give_rootfs_to(bundle, host_id: int) -> None:
    """chown the rootfs to the container's root and let it traverse the bundle's parents."""
    path = bundle.path
    while path != "/":
        os.chmod(path, os.stat(path).st_mode | 0o011)
        path = os.path.dirname(path)
    for dirpath, dirnames, filenames in os.walk(bundle.rootfs):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, host_id, host_id)


def _add_possessor_only_key(description: str) -> int:
    """A "user" key in the caller's session keyring that only a possessor may even see (the session
    keyring's holders possess it); its serial."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    key = libc.syscall(ctypes.c_long(248), b"user", description.encode(), b"secret", ctypes.c_size_t(6),
                       ctypes.c_long(-3))  # add_key(..., KEY_SPEC_SESSION_KEYRING)
    assert key > 0, os.strerror(ctypes.get_errno())
    assert libc.syscall(ctypes.c_long(250), ctypes.c_long(5), ctypes.c_long(key), ctypes.c_ulong(0x3f000000)) == 0
    return key


def _invalidate_key(key: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall(ctypes.c_long(250), ctypes.c_long(21), ctypes.c_long(key))  # KEYCTL_INVALIDATE


def test_a_session_keyring_of_its_own(make_bundle, state_root) -> None:
    """As with runc, neither the init nor an exec holds the session keyring it was started from (the
    host's): a key only its possessors may see stays out of sight. The init makes "_ses.<id>",
    which its owner may search, and an exec joins it."""
    def edit(c: dict) -> None:
        c["linux"]["maskedPaths"].remove("/proc/keys")  # to look at what the container possesses

    key = _add_possessor_only_key(f"railcar-test-{os.getpid()}")
    try:
        assert f"railcar-test-{os.getpid()}" in open("/proc/keys").read()  # we possess it
        bundle = make_bundle(["sh", "-c", "cat /proc/keys; echo END; sleep 100"], edit=edit)
        container, created = create_captured(bundle, state_root)
        container.start()
        init = created.read_until("END\n")   # before the kill below
        ran = exec_captured(container, {"args": ["cat", "/proc/keys"], "cwd": "/"})
        container.kill(signal.SIGKILL)
        finish(container, created)
    finally:
        _invalidate_key(key)
    for output in (init, ran.output):
        assert "railcar-test-" not in output, output
        [own] = [line.split() for line in output.splitlines() if f"_ses.{bundle.id}:" in line.split()]
        assert (own[4], own[7]) == ("3f1b0000", "keyring"), own


def _signal_action(sig: int, handler: int) -> None:
    """rt_sigaction(sig, handler) even for the two signals glibc keeps (and `signal.signal` refuses)."""
    libc = ctypes.CDLL(None, use_errno=True)
    action = (ctypes.c_ulong * 4)(handler, 0, 0, 0)
    assert libc.syscall(ctypes.c_long(13), ctypes.c_long(sig), action, None, ctypes.c_long(8)) == 0


def test_no_signal_stays_ignored(make_bundle, state_root) -> None:
    """glibc's posix_spawn leaves signals 32 and 33 ignored in the child (so in a zygote `start`
    spawned), and an ignored signal stays ignored across execve: the container starts with none."""
    bundle = make_bundle(["grep", "SigIgn", "/proc/self/status"])
    for sig in (32, 33):
        _signal_action(sig, 1)  # SIG_IGN, as a posix_spawn'd parent has them
    try:
        ran = run_container(bundle, state_root)
    finally:
        for sig in (32, 33):
            _signal_action(sig, 0)
    assert ran.output.split() == ["SigIgn:", "0000000000000000"]


def test_a_helper_keeps_none_of_its_callers_stdio() -> None:
    """A helper goes into the container's namespaces: its 0-2 are /dev/null, not the caller's (the
    shim daemon's stderr is a FIFO on the host, another container's log in a pool)."""
    from railcar.runtime import process
    from railcar.runtime.channel import Channel, Failed

    class NoFds:
        cgroup = None
        init_pid = 0

        def keep_fds(self) -> set[int]:
            return set()

    def body(ch: Channel, launch: object) -> None:
        ch.send(Failed("probe", " ".join(os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2))))

    parent, child = Channel.pair()
    pid = process._fork_helper(parent, child, NoFds(), body)
    try:
        with pytest.raises(RuntimeFailure) as reported:
            parent.recv("probe")
    finally:
        os.waitpid(pid, 0)
        parent.close()
    assert reported.value.message == "/dev/null /dev/null /dev/null"


def test_an_exec_works_whatever_the_container_did_to_its_dev_null(make_bundle, state_root) -> None:
    """The helpers' /dev/null is the host's: a container that removed its own (or made it a
    directory) still gets its execs, kubelet's exec probes among them."""
    bundle = make_bundle(["sleep", "100"], edit=lambda c: c["root"].update(readonly=False))
    container, created = create_captured(bundle, state_root)
    container.start()
    try:
        removed = exec_captured(container, {"args": ["sh", "-c", "rm /dev/null && mkdir /dev/null"], "cwd": "/"})
        assert removed.status == 0, removed
        ran = exec_captured(container, {"args": ["echo", "hello"], "cwd": "/"})
    finally:
        container.kill(signal.SIGKILL)
        finish(container, created)
    assert (ran.status, ran.output) == (0, "hello\n"), ran


def _volume(tmp_path) -> str:
    """A directory with a file owned by root and one by 5:5 on disk."""
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "root-owned").write_text("r")
    (volume / "five").write_text("5")
    os.chown(volume / "five", 5, 5)
    os.chmod(volume, 0o755)
    return str(volume)


def test_an_idmapped_bind_shows_its_files_ids_through_its_own_mappings(make_bundle, state_root, tmp_path) -> None:
    """mounts[].uidMappings/gidMappings (runtime-spec 1.1, runc 1.2): ids on disk 0-9 show as 1000-1009
    in the container; what the mapping leaves out shows as the overflow id."""
    maps = [{"containerID": 0, "hostID": 1000, "size": 10}]
    volume = _volume(tmp_path)

    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/vol", "type": "bind", "source": volume, "options": ["rbind", "idmap"],
                            "uidMappings": maps, "gidMappings": maps})
        c["mounts"].append({"destination": "/plain", "type": "bind", "source": volume, "options": ["rbind"]})

    ran = run_container(make_bundle(["stat", "-c", "%n %u:%g", "/vol/root-owned", "/vol/five", "/plain/five"],
                                    edit=edit), state_root)
    assert (ran.status, ran.output.splitlines()) == (0, ["/vol/root-owned 1000:1000", "/vol/five 1005:1005",
                                                         "/plain/five 5:5"]), ran
    assert not [p for p in open("/proc/self/mountinfo").read().split() if p.startswith(volume)]


def test_idmap_without_mappings_takes_the_containers_user_namespace_ones(make_bundle, state_root, tmp_path) -> None:
    """As runc: in a user-namespaced container, an `idmap` bind of a volume owned by the host's root
    shows it owned by the container's root, and what the container writes there is the host root's."""
    volume = _volume(tmp_path)

    def edit(c: dict) -> None:
        _user_namespaced(c)
        c["mounts"].append({"destination": "/vol", "type": "bind", "source": volume, "options": ["rbind", "idmap"]})
        c["mounts"].append({"destination": "/plain", "type": "bind", "source": volume, "options": ["rbind"]})

    bundle = make_bundle(["sh", "-c", "stat -c '%n %u:%g' /vol/root-owned /plain/root-owned && echo w > /vol/new"],
                         edit=edit, copy_binary=True)
    _give_rootfs_to(bundle, 100000)
    ran = run_container(bundle, state_root)
    assert (ran.status, ran.output.splitlines()) == (0, ["/vol/root-owned 0:0", "/plain/root-owned 65534:65534"]), ran
    assert (os.stat(os.path.join(volume, "new")).st_uid, os.stat(os.path.join(volume, "new")).st_gid) == (0, 0)


def test_an_idmapped_bind_on_a_file_system_without_idmapping_is_refused_by_name(make_bundle, state_root) -> None:
    maps = [{"containerID": 0, "hostID": 1000, "size": 10}]

    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/p", "type": "bind", "source": "/proc", "options": ["bind", "idmap"],
                            "uidMappings": maps, "gidMappings": maps})

    with pytest.raises(RuntimeFailure) as refused:
        run_container(make_bundle(["true"], edit=edit), state_root)
    assert "mounts[" in str(refused.value) and "cannot idmap" in str(refused.value), refused.value


def test_an_idmapped_bind_keeps_the_locks_of_the_containers_mount_namespace(make_bundle, state_root,
                                                                            tmp_path) -> None:
    """The bind is cloned inside the init's mount namespace, whose copies of the host's mounts the
    kernel locked: a container root with CAP_SYS_ADMIN in its user namespace cannot unmount the
    submount that hides a host file below it (as with a plain rbind)."""
    volume = _volume(tmp_path)
    os.mkdir(os.path.join(volume, "sub"))
    with open(os.path.join(volume, "sub", "hidden"), "w") as f:
        f.write("host secret\n")
    sc.mount("tmpfs", os.path.join(volume, "sub"), "tmpfs", 0, "size=64k")
    try:
        def edit(c: dict) -> None:
            _user_namespaced(c)
            caps = c["process"]["capabilities"]
            for kind in ("bounding", "effective", "permitted"):
                caps[kind] = [*caps[kind], "CAP_SYS_ADMIN"]
            c["mounts"].append({"destination": "/vol", "type": "bind", "source": volume,
                                "options": ["rbind", "idmap"]})

        script = ("umount /vol/sub 2>/dev/null || umount -l /vol/sub 2>/dev/null; "
                  "cat /vol/sub/hidden 2>/dev/null || echo hidden")
        bundle = make_bundle(["sh", "-c", script], edit=edit, copy_binary=True)
        _give_rootfs_to(bundle, 100000)
        ran = run_container(bundle, state_root)
    finally:
        sc.umount2(os.path.join(volume, "sub"))
    assert (ran.status, ran.output) == (0, "hidden\n"), ran


def test_an_idmapped_source_the_container_may_not_reach_is_bound_as_runc_binds_it(make_bundle, state_root,
                                                                                   tmp_path) -> None:
    """A volume below a directory only the host's root may enter (as kubelet's are): the tree is made
    by the caller, so the init tells a directory from a file by the tree, not by its own stat."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    volume = _volume(private)

    def edit(c: dict) -> None:
        _user_namespaced(c)
        c["mounts"].append({"destination": "/vol", "type": "bind", "source": volume, "options": ["rbind", "idmap"]})

    bundle = make_bundle(["stat", "-c", "%n %u:%g", "/vol/root-owned"], edit=edit, copy_binary=True)
    _give_rootfs_to(bundle, 100000)
    ran = run_container(bundle, state_root)
    assert (ran.status, ran.output) == (0, "/vol/root-owned 0:0\n"), ran


def test_an_init_dying_while_its_idmapped_bind_is_made_fails_the_create_as_a_helper_gone(
        make_bundle, state_root, tmp_path, monkeypatch) -> None:
    from railcar.runtime import process
    from railcar.runtime.channel import PeerGone

    maps = [{"containerID": 0, "hostID": 1000, "size": 10}]
    volume = _volume(tmp_path)
    make_tree = process._idmapped_tree

    def killed_first(spec, index, init, pidfd, namespaces):
        os.kill(init, signal.SIGKILL)
        select.select([pidfd], [], [], 10)
        return make_tree(spec, index, init, pidfd, namespaces)

    monkeypatch.setattr(process, "_idmapped_tree", killed_first)

    def edit(c: dict) -> None:
        c["mounts"].append({"destination": "/vol", "type": "bind", "source": volume, "options": ["rbind", "idmap"],
                            "uidMappings": maps, "gidMappings": maps})

    with pytest.raises(PeerGone, match="died"):
        run_container(make_bundle(["true"], edit=edit), state_root)


def test_the_signals_are_set_back_even_where_pythons_table_does_not_know() -> None:
    """What the container's process resets before its execve: the mask, and every action away from
    the default as the kernel has it, set through Python's `signal` or behind its table
    (faulthandler's: the daemon's SIGUSR1 dump would write railcar's traceback to the container's
    stderr; glibc's 32 and 33; a C library's, as readline's SIGWINCH in this test's process)."""
    import faulthandler

    from railcar.runtime import process, syscalls

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            faulthandler.register(signal.SIGUSR1)
            faulthandler.enable()
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, lambda *_: None)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})
            _signal_action(33, 1)
            process._default_signals(syscalls.signals_not_default())   # (the caller's list, in the caller)
            with open("/proc/self/status") as f:
                os.write(write_end, " ".join(line.strip() for line in f if line.startswith("Sig")).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        status = f.read()
    assert os.waitpid(pid, 0)[1] == 0
    assert status.split()[4:] == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16, "SigCgt:", "0" * 16], status
