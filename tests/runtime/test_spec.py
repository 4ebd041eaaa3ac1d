"""config.json validation: every error names the JSON path; a bad spec creates nothing."""

import json
import os

import pytest

from railcar.runtime import Container, SpecError
from railcar.runtime.spec import CpuAffinity, Scheduler, load_spec, parse_spec

from .conftest import CGROUP_PARENT, CGROUP_ROOT, default_config


def _with(edit) -> dict:
    config = default_config("spec-test")
    edit(config)
    return config


@pytest.mark.parametrize("edit, path, problem", [
    (lambda c: c["process"].update(args=[]), "process.args", "must be a non-empty list"),
    (lambda c: c["process"].update(args="sh"), "process.args", "must be a list"),
    (lambda c: c["process"].update(cwd="relative"), "process.cwd", "absolute"),
    (lambda c: c["process"].update(cwd="/" + "d/" * 2047 + "d"), "process.cwd", "4096 bytes long: file name too long"),
    (lambda c: c["process"].update(env=["NOEQUALS"]), "process.env[0]", "KEY=VALUE"),
    (lambda c: c["process"].update(env=["A=1", "=x"]), "process.env[1]", "KEY=VALUE"),
    (lambda c: c["process"].update(env=["A=\0"]), "process.env[0]", "NUL"),
    (lambda c: c["process"].update(env=["X=\ud800"]), "process.env[0]", "not valid Unicode"),
    (lambda c: c["process"]["user"].update(uid=-1), "process.user.uid", "non-negative"),
    (lambda c: c["process"].update(oomScoreAdj=5000), "process.oomScoreAdj", "-1000"),
    (lambda c: c["process"].update(rlimits=[{"type": "NOFILE", "soft": 1, "hard": 1}]),
     "process.rlimits[0].type", "unknown rlimit"),
    (lambda c: c["process"].update(consoleSize={"height": 24}), "process.consoleSize.width", "is required"),
    (lambda c: c["process"].update(consoleSize={"height": 1 << 16, "width": 80}), "process.consoleSize",
     "at most 65535"),
    (lambda c: c["process"].update(scheduler={"nice": 1}), "process.scheduler.policy", "is required"),
    (lambda c: c["process"].update(scheduler={"policy": "SCHED_FAST"}), "process.scheduler.policy",
     "unknown policy 'SCHED_FAST'"),
    (lambda c: c["process"].update(scheduler={"policy": "SCHED_BATCH", "nice": 20}), "process.scheduler.nice",
     "between -20 and 19"),
    (lambda c: c["process"].update(scheduler={"policy": "SCHED_OTHER", "priority": 5}),
     "process.scheduler.priority", "only for SCHED_FIFO and SCHED_RR"),
    (lambda c: c["process"].update(scheduler={"policy": "SCHED_RR", "priority": 5, "deadline": 10}),
     "process.scheduler", "only for SCHED_DEADLINE"),
    (lambda c: c["process"].update(scheduler={"policy": "SCHED_RR", "flags": ["SCHED_FLAG_FAST"]}),
     "process.scheduler.flags[0]", "unknown flag"),
    (lambda c: c["process"].update(ioPriority={"class": "IOPRIO_CLASS_FAST"}), "process.ioPriority.class",
     "unknown class"),
    (lambda c: c["process"].update(ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 8}),
     "process.ioPriority.priority", "between 0 and 7"),
    (lambda c: c["process"].update(execCPUAffinity={"initial": "0-x"}), "process.execCPUAffinity.initial",
     "'0-x' is not a CPU number or range"),
    *((lambda c, cpus=cpus: c["process"].update(execCPUAffinity={"final": cpus}), "process.execCPUAffinity.final",
       problem)
      for cpus, problem in (("3-1", "'3-1' is not a CPU range"), ("8192", "above 8191"), (" , ", "names no CPU"),
                            ("1_0", "'1_0' is not a CPU number"), ("0 - 1", "'0 - 1' is not a CPU number"),
                            ("+1", "'+1' is not a CPU number"))),
    (lambda c: c["process"].update(scheduler={"policy": "SCHED_FIFO", "priority": 2**32 + 1}),
     "process.scheduler.priority", "not a 32-bit integer"),
    (lambda c: c["process"].update(scheduler={"policy": "SCHED_IDLE", "nice": 2**40}),
     "process.scheduler.nice", "not a 32-bit integer"),
    (lambda c: c["process"].update(scheduler={"policy": "SCHED_DEADLINE", "runtime": 2**64}),
     "process.scheduler.runtime", "not a 64-bit unsigned integer"),
    (lambda c: c["linux"].update(personality={"domain": "LINUX64"}), "linux.personality.domain",
     "unknown domain"),
    (lambda c: c["linux"].update(personality={"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]}),
     "linux.personality.flags", "not supported"),
    (lambda c: c["linux"].update(intelRdt={"closID": "x"}), "linux.intelRdt", "not supported"),
    (lambda c: c["mounts"][0].update(type="bind", uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}]),
     "mounts[0].gidMappings", "both uidMappings and gidMappings"),
    (lambda c: c["mounts"][0].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}],
                                     gidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
     "mounts[0].type", "only bind mounts"),
    (lambda c: c["mounts"][0].update(type="bind", options=["rbind", "idmap"]), "mounts[0].options",
     "needs the container to have a user namespace"),
    (lambda c: c["mounts"][0].update(type="bind", uidMappings=[], gidMappings=[]), "mounts[0].uidMappings",
     "neither empty"),
    (lambda c: c["mounts"][0].update(type="bind", options=["rbind", "ridmap"], uidMappings=[],
                                     gidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
     "mounts[0].uidMappings", "both uidMappings and gidMappings"),
    (lambda c: c["linux"].update(timeOffsets={"boottime": {"secs": 1}}), "linux.timeOffsets",
     "new time namespace"),
    (lambda c: c.pop("root"), "root", "is required"),
    (lambda c: c.update(ociVersion="2.0.0"), "ociVersion", "unsupported"),
    (lambda c: c["mounts"][2].update(destination="dev/pts"), "mounts[2].destination",
     "absolute"),
    (lambda c: c["mounts"][0].update(options="ro"), "mounts[0].options", "must be a list"),
    (lambda c: c["linux"]["namespaces"].append({"type": "bogus"}), "linux.namespaces[5].type",
     "unknown namespace"),
    (lambda c: c["linux"]["namespaces"].append({"type": "pid"}), "linux.namespaces[5].type",
     "listed twice"),
    (lambda c: c["linux"].update(namespaces=[{"type": "pid"}]), "linux.namespaces",
     "mount namespace is required"),
    (lambda c: c["linux"]["namespaces"].append({"type": "user"}), "linux.uidMappings",
     "needs uid and gid mappings"),
    (lambda c: c["linux"].update(devices=[{"path": "/dev/x", "type": "q"}]),
     "linux.devices[0].type", "must be one of"),
    (lambda c: c["linux"].update(rootfsPropagation="sideways"), "linux.rootfsPropagation",
     "unknown propagation"),
    (lambda c: c["linux"].update(maskedPaths=["proc/kcore"]), "linux.maskedPaths[0]",
     "absolute"),
    (lambda c: c["linux"].update(sysctl={"kernel.x": 1}), "linux.sysctl.kernel.x",
     "must be a string"),
    (lambda c: c.update(annotations={"a": 1}), "annotations.a", "must be a string"),
    (lambda c: c["linux"].update(namespaces=[{"type": "mount"}]), "hostname",
     "uts namespace"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}]),
     "process.rlimits[0].soft", "above the hard limit"),
    (lambda c: c["linux"]["namespaces"][3].update(path="/proc/self/ns/uts") or c.update(hostname="x"),
     "hostname", "joins the host's uts namespace"),
    (lambda c: c["linux"].update(sysctl={"kernel.hostname": "x"}), "linux.sysctl.kernel.hostname",
     "not a namespaced sysctl"),
    # What the kernel would refuse only later, once create had succeeded.
    (lambda c: c["process"]["env"].append("A=b\0c"), "process.env[2]", "NUL byte"),
    (lambda c: c["process"].update(args=["sh", "-c", "echo a\0b"]), "process.args[2]", "NUL byte"),
    (lambda c: c["process"].update(cwd="/tm\0p"), "process.cwd", "NUL byte"),
    (lambda c: c["mounts"][0].update(destination="/pro\0c"), "mounts[0].destination", "NUL byte"),
    (lambda c: c.update(hostname="ho\0st"), "hostname", "NUL byte"),
    (lambda c: c.update(hostname="h" * 65), "hostname", "at most 64"),
    (lambda c: c.update(hostname="\ud800"), "hostname", "not valid Unicode"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_CORE", "soft": 1, "hard": 2**70}]),
     "process.rlimits[0].hard", "64 bits"),
    (lambda c: c["process"]["user"].update(additionalGids=list(range(65537))), "process.user.additionalGids",
     "at most 65536"),
    # (uid_t)-1 means "unchanged" to setresuid: the process would stay root.
    (lambda c: c["process"]["user"].update(uid=4294967295), "process.user.uid", "not a valid id"),
    (lambda c: c["process"]["user"].update(additionalGids=[5, 4294967295]), "process.user.additionalGids[1]",
     "not a valid id"),
    # A sysctl must belong to a namespace of the container's own, or it would change the host.
    (lambda c: c["linux"].update(sysctl={"kernel.panic": "1"}), "linux.sysctl.kernel.panic",
     "not a namespaced sysctl"),
    (lambda c: (c["linux"].update(namespaces=[{"type": "mount"}, {"type": "uts"}]),
                c["linux"].update(sysctl={"net.ipv4.ip_forward": "1"})),
     "linux.sysctl.net.ipv4.ip_forward", "own (network)"),
    (lambda c: (c["linux"].update(namespaces=[{"type": "mount"}, {"type": "uts"}]),
                c["linux"].update(sysctl={"fs.mqueue.msg_max": "100"})),
     "linux.sysctl.fs.mqueue.msg_max", "own (ipc)"),
    (lambda c: (c["linux"]["namespaces"][1].update(path="/proc/self/ns/net"),
                c["linux"].update(sysctl={"net.ipv4.ip_forward": "1"})),
     "linux.sysctl.net.ipv4.ip_forward", "joins the host's network namespace"),
])
def test_errors_name_the_json_path(edit, path, problem) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(_with(edit), "/bundle")
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value)
    assert info.value.stage == "spec"


def test_unknown_fields_are_tolerated_and_defaults_apply() -> None:
    def edit(c: dict) -> None:
        c["futureField"] = {"x": 1}
        c["process"]["somethingNew"] = True
        c["root"]["path"] = "rootfs"

    spec = parse_spec(_with(edit), "/bundle")
    assert spec.root_path == "/bundle/rootfs" and spec.root_readonly
    assert spec.process.args == ("sh",) and spec.process.user.uid == 0
    assert [ns.type for ns in spec.linux.namespaces] == ["pid", "network", "ipc", "uts",
                                                         "mount"]
    assert spec.mounts[2].options == ("nosuid", "noexec", "newinstance", "ptmxmode=0666",
                                      "mode=0620", "gid=5")


def test_load_spec_reports_missing_and_malformed_files(tmp_path) -> None:
    with pytest.raises(SpecError, match="config.json: not found"):
        load_spec(str(tmp_path))
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(SpecError, match="config.json: not valid JSON"):
        load_spec(str(tmp_path))


def test_broken_config_creates_nothing(make_bundle, state_root) -> None:
    bundle = make_bundle(["true"])
    bundle.config["process"]["args"] = []
    bundle.write()
    with pytest.raises(SpecError, match=r"^process\.args: must be a non-empty list$"):
        Container.create(bundle.id, bundle.path, root=state_root)
    assert not os.path.exists(os.path.join(state_root, bundle.id))
    assert not os.path.exists(os.path.join(CGROUP_ROOT, "pids", CGROUP_PARENT.lstrip("/"),
                                           bundle.id))


def test_failure_in_the_init_creates_nothing(make_bundle, state_root) -> None:
    bundle = make_bundle(["no-such-binary"])
    with pytest.raises(Exception, match="no-such-binary") as info:
        Container.create(bundle.id, bundle.path, root=state_root)
    assert info.value.stage == "process"
    assert not os.path.exists(os.path.join(state_root, bundle.id))
    assert json.load(open(os.path.join(bundle.path, "config.json")))  # bundle untouched


def test_scheduling_settings_as_the_kernel_takes_them() -> None:
    config = default_config("c")
    config["process"].update(scheduler={"policy": "SCHED_DEADLINE", "flags": ["SCHED_FLAG_RESET_ON_FORK",
                                                                              "SCHED_FLAG_RECLAIM"],
                                        "runtime": 1, "deadline": 2, "period": 3},
                             ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 6},
                             execCPUAffinity={"initial": " 0-1, 3,,5 ", "final": ""})
    config["linux"]["personality"] = {"domain": "LINUX32", "flags": []}
    spec = parse_spec(config, "/b")
    assert spec.process.scheduler == Scheduler(policy=6, flags=0x03, runtime=1, deadline=2, period=3)
    assert spec.process.io_priority == 2 << 13 | 6
    assert spec.process.exec_cpu_affinity == CpuAffinity(initial=frozenset({0, 1, 3, 5}), final=None)
    assert spec.linux.personality == 8


def test_null_means_absent_as_in_go() -> None:
    """runc's encoding/json reads null as the zero value; a null must not become a wrong value."""
    def edit(c: dict) -> None:
        c["process"].update(terminal=None, noNewPrivileges=None)
        c["process"]["user"].update(umask=None, uid=None)
        c["linux"]["devices"] = [{"path": "/dev/null2", "type": "c", "major": 1, "minor": 3, "fileMode": None}]

    spec = parse_spec(_with(edit), "/bundle")
    assert spec.process is not None
    assert (spec.process.terminal, spec.process.no_new_privileges) == (False, False)
    assert (spec.process.user.umask, spec.process.user.uid) == (None, 0)
    assert spec.linux.devices[0].file_mode == 0o666
    with pytest.raises(SpecError) as info:
        parse_spec(_with(lambda c: c["linux"].update(devices=[{"path": "/dev/x", "type": "c", "major": None}])),
                   "/bundle")
    assert info.value.path.endswith(".major")
