"""Kubernetes pods on railcar through containerd's CRI plugin, driven as kubelet drives it.

A containerd of this module's own has its CRI plugin on, with railcar as the runtime handler, a
pause image built from busybox, and a CNI bridge. A gRPC client speaks CRI v1 to it (the subset in
cri_v1.proto). The shim never sees CRI itself, only what CRI makes of it: a pause container named
after its pod and app containers that find its daemon by the sandbox-id annotation, FIFOs that CRI turns into log files,
execs, stats, resource updates, Kill on stop, and OOM reasons taken from the shim's events.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import (Leftovers, cgroups_of, cgroups_parents, devenv, eventually, mounts_under,
                       processes_named, start_containerd, stop_zygotes)

pytestmark = [pytest.mark.integration, pytest.mark.cgroup_v2]  # run again in the pure v2 guest
# gRPC's fork handlers restart its thread pool in every child this process forks afterwards, as
# long as a channel lived (measured: 6 threads in each child). Later tests here fork the runtime's
# helpers, and a helper with threads cannot unshare a user namespace (EINVAL); the handlers also
# leave gRPC's fds behind. They are off unless asked for: it reads this once, on import.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"
grpc = pytest.importorskip("grpc")  # grpcio comes with the test extra's grpcio-tools

HERE = Path(__file__).resolve().parent
POD_SUBNET = "10.231.7.0/24"


def _load_cri() -> Any:
    """The CRI v1 messages, compiled from cri_v1.proto at import (grpc.protos finds it on sys.path)."""
    sys.path.insert(0, str(HERE))
    try:
        return grpc.protos("cri_v1.proto")
    finally:
        sys.path.remove(str(HERE))


pb = _load_cri()


class CriClient:
    """A CRI v1 client on containerd's socket: `call("RunPodSandbox", config=...)` (runtime and
    image services alike)."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(f"unix://{address}")
        self.methods = {method.name: (service.name, method)
                        for service in pb.DESCRIPTOR.services_by_name.values() for method in service.methods}

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, deadline: float = 60.0, **fields: Any) -> Any:
        service, spec = self.methods[method]
        request, response = getattr(pb, spec.input_type.name), getattr(pb, spec.output_type.name)
        stub = self.channel.unary_unary(f"/runtime.v1.{service}/{method}",
                                        request_serializer=request.SerializeToString,
                                        response_deserializer=response.FromString)
        return stub(request(**fields), timeout=deadline)

    def ready(self, *images: str) -> bool:
        """Whether CRI serves calls (it refuses them for a while after containerd starts) and knows
        `images` (it learns of an import from containerd's events, a moment later)."""
        try:
            self.call("Version", deadline=5)
            return all(self.call("ImageStatus", deadline=5, image=pb.ImageSpec(image=ref)).image.id
                       for ref in images)
        except grpc.RpcError:
            return False


@dataclass
class Cri:
    cd: devenv.Containerd
    runtime: CriClient
    cgroup_parent: str  # a top-level cgroup of this module's own; pods go below it
    logs: Path


@pytest.fixture(scope="module")
def cri() -> Iterator[Cri]:
    """containerd with CRI on, its images and CNI bridge; at the end nothing of it is left: no
    process, cgroup, mount, bridge or runtime state."""
    workdir = Path(tempfile.mkdtemp(prefix="railcar-cri-"))
    bridge = f"rc-cri-{os.getpid() % 100000}"
    (workdir / "net.d").mkdir()
    # No gateway and no masquerading: the bridge plugin then changes nothing on the host but the
    # bridge itself (removed below) and the pods' veth pairs (removed by CNI DEL).
    (workdir / "net.d" / "10-railcar-test.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "railcar-test", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False,
             "ipam": {"type": "host-local", "subnet": POD_SUBNET, "dataDir": str(workdir / "ipam")}},
            {"type": "loopback"}]}))
    cd = start_containerd(workdir, cri=True)
    cgroup_parent = f"railcar-cri-{os.getpid()}"
    try:
        images = (devenv.busybox_image(cd),
                  devenv.busybox_image(cd, devenv.PAUSE_IMAGE_REF, ["/bin/sleep", "2147483647"]))
        with contextlib.closing(CriClient(cd.address)) as client:
            assert eventually(lambda: client.ready(*images)), "CRI did not come up with the images"
            yield Cri(cd, client, cgroup_parent, workdir / "logs")
    finally:
        _teardown(cd, workdir, bridge, cgroup_parent)


def _teardown(cd: devenv.Containerd, workdir: Path, bridge: str, cgroup_parent: str) -> None:
    """Remove everything, each step whatever the others did, and then report what failed."""
    steps = [
        lambda: _sweep(cd), cd.stop, lambda: stop_zygotes(cd),
        lambda: subprocess.run(["ip", "link", "delete", bridge], capture_output=True),
        lambda: _remove_cgroup_parents(cgroup_parent),
        lambda: _remove_empty_dir(Path("/run/railcar") / cd.namespace),
        lambda: _remove_workdir(workdir),
    ]
    failures = []
    for step in steps:
        try:
            step()
        except Exception as e:
            failures.append(e)
    assert not failures, failures
    assert not os.path.exists(f"/sys/class/net/{bridge}")


def _sweep(cd: devenv.Containerd) -> None:
    """Kill and remove whatever a failed test left running, as its pod's teardown would have."""
    tasks = [line.split()[0] for line in cd.ctr("task", "ls", "-q").stdout.decode().split("\n") if line.strip()]
    for task in tasks:
        cd.ctr("task", "kill", "-s", "SIGKILL", task)
    for task in tasks:
        eventually(lambda: cd.ctr("task", "delete", "-f", task).returncode == 0 or
                   task not in cd.ctr("task", "ls", "-q").stdout.decode().split())
    for container in cd.ctr("container", "ls", "-q").stdout.decode().split():
        cd.ctr("container", "delete", container)


def _remove_cgroup_parents(parent: str) -> None:
    """rmdir /`parent` in every hierarchy (which fails, and so reports, if a cgroup is left in it)."""
    failures = []
    for path in cgroups_parents(parent):
        try:
            os.rmdir(path)
        except OSError as e:
            failures.append(e)
    assert not failures, failures


def _remove_empty_dir(path: Path) -> None:
    if path.is_dir():
        path.rmdir()  # fails (and so reports) if a container's state is still in it


def _remove_workdir(workdir: Path) -> None:
    assert not mounts_under(workdir), "mounts left"
    shutil.rmtree(workdir)


@pytest.fixture
def leaks(cri: Cri) -> Iterator[None]:
    before = Leftovers(cri.cd, cri.cgroup_parent)
    yield
    before.assert_none_new()


@dataclass
class Pod:
    id: str
    config: Any  # the PodSandboxConfig, which CreateContainer repeats


@contextlib.contextmanager
def pod(cri: Cri, network: int = pb.POD, pid: int = pb.CONTAINER, sysctls: dict[str, str] | None = None,
        cgroup_parent: str = "") -> Iterator[Pod]:
    """A running pod sandbox (handler railcar), stopped and removed on the way out as kubelet does.
    Its cgroup parent is the module's own unless `cgroup_parent` names another."""
    name = f"pod-{uuid.uuid4().hex[:8]}"
    cri.logs.mkdir(exist_ok=True)
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=name, namespace="railcar-test"),
        log_directory=str(cri.logs / name),
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent or f"/{cri.cgroup_parent}", sysctls=sysctls or {},
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=_namespaces(network, pid))))
    sandbox = cri.runtime.call("RunPodSandbox", config=config, runtime_handler="railcar").pod_sandbox_id
    try:
        yield Pod(sandbox, config)
    finally:
        cri.runtime.call("StopPodSandbox", pod_sandbox_id=sandbox)
        cri.runtime.call("RemovePodSandbox", pod_sandbox_id=sandbox)


def _namespaces(network: int, pid: int) -> Any:
    return pb.NamespaceOption(network=network, pid=pid, ipc=pb.POD)


def start_container(cri: Cri, in_pod: Pod, command: list[str], memory: int = 0, user: int | None = None,
                    readonly_rootfs: bool = False, mounts: tuple[Any, ...] = (), tty: bool = False,
                    **security: Any) -> str:
    """Create and start an app container of busybox running `command` (in the pod's namespaces),
    as `user` if given, with CRI `mounts` (host paths) and other security context fields; its log
    is <name>.log."""
    name = f"c-{uuid.uuid4().hex[:8]}"
    pod_namespaces = in_pod.config.linux.security_context.namespace_options
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=devenv.IMAGE_REF),
        command=command, log_path=f"{name}.log", mounts=mounts, tty=tty,
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(memory_limit_in_bytes=memory),
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pod_namespaces, readonly_rootfs=readonly_rootfs,
                run_as_user=None if user is None else pb.Int64Value(value=user), **security)))
    container = cri.runtime.call("CreateContainer", pod_sandbox_id=in_pod.id, config=config,
                                 sandbox_config=in_pod.config).container_id
    cri.runtime.call("StartContainer", container_id=container)
    return container


def log_of(cri: Cri, in_pod: Pod) -> str:
    """What CRI logged for the pod's containers (the tests run one per pod)."""
    return "".join(p.read_text() for p in (cri.logs / in_pod.config.metadata.name).glob("*.log"))


def exec_sync(cri: Cri, container: str, *cmd: str, timeout: int = 0) -> tuple[bytes, bytes, int]:
    reply = cri.runtime.call("ExecSync", deadline=timeout + 60, container_id=container, cmd=cmd, timeout=timeout)
    return reply.stdout, reply.stderr, reply.exit_code


def status(cri: Cri, container: str) -> Any:
    return cri.runtime.call("ContainerStatus", container_id=container).status


def task_pid(cri: Cri, task: str) -> int:
    """The pid containerd has for a task (the pause container's is what app containers join)."""
    for line in cri.cd.ctr("task", "ls").stdout.decode().splitlines():
        fields = line.split()
        if fields and fields[0] == task:
            return int(fields[1])
    raise AssertionError(f"no task {task}")


PURE_V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()


def cgroup_file(cgroup: str, v1: tuple[str, str], v2: str) -> str:
    """A cgroup's file: v1's (controller, file) on a v1 host, the v2 file on a pure v2 host."""
    path = f"/sys/fs/cgroup{cgroup}/{v2}" if PURE_V2 else f"/sys/fs/cgroup/{v1[0]}{cgroup}/{v1[1]}"
    return Path(path).read_text().strip()


def test_a_pod_runs_in_one_shim_with_logs_execs_stats_and_updates(cri, leaks) -> None:
    shims_before = processes_named("railcar-shim")
    with pod(cri) as p:
        container = start_container(cri, p, ["sh", "-c", "echo hello-out; echo hello-err >&2; trap '' TERM; "
                                                         "exec sleep 999"])
        # The pause container and the app container share one shim daemon (found by sandbox id).
        assert len(processes_named("railcar-shim") - shims_before) == 1

        # CRI turns what the shim forwards through the FIFOs into its log format, stream by stream.
        assert eventually(lambda: "stderr F hello-err" in log_of(cri, p)), log_of(cri, p)
        assert "stdout F hello-out" in log_of(cri, p)

        # The container sits in the pod's network namespace, which CRI made and CNI wired.
        pause_net = os.readlink(f"/proc/{task_pid(cri, p.id)}/ns/net")
        out, _, code = exec_sync(cri, container, "sh", "-c", "readlink /proc/self/ns/net; ip -4 -o addr show eth0")
        assert code == 0
        net, addr = out.decode().splitlines()
        assert net == pause_net != os.readlink("/proc/self/ns/net")
        assert " 10.231.7." in addr

        assert exec_sync(cri, container, "sh", "-c", "echo out; echo err >&2; exit 3") == (b"out\n", b"err\n", 3)

        # An exec that runs over its timeout fails the call, and its process is killed.
        with pytest.raises(grpc.RpcError) as timed_out:
            exec_sync(cri, container, "sleep", "1000", timeout=1)
        # CRI's own verdict, once the shim reported the killed exec's exit and closed its output
        # (not our client giving up on a call that hangs).
        assert timed_out.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "timeout 1s exceeded" in timed_out.value.details()
        assert eventually(lambda: b"sleep 1000" not in exec_sync(cri, container, "ps", "-o", "args")[0])

        stats = cri.runtime.call("ContainerStats", container_id=container).stats
        assert stats.cpu.usage_core_nano_seconds.value > 0
        assert stats.memory.working_set_bytes.value > 0
        assert container in {s.attributes.id for s in cri.runtime.call("ListContainerStats").stats}
        # Without a filter containerd also asks the pause container for Stats (and only logs a failure).
        assert cri.cd.ctr("task", "metrics", p.id).returncode == 0
        # The pod's: CRI reads the pod cgroup itself, and counts processes with the shim's Pids.
        pod_stats = cri.runtime.call("PodSandboxStats", pod_sandbox_id=p.id).stats.linux
        assert pod_stats.process.process_count.value == 1  # sleep (sh exec'd it)
        assert [c.attributes.id for c in pod_stats.containers] == [container]

        cri.runtime.call("UpdateContainerResources", container_id=container,
                         linux=pb.LinuxContainerResources(memory_limit_in_bytes=96 << 20, cpu_shares=256))
        cgroup = f"/{cri.cgroup_parent}/{container}"
        assert cgroup_file(cgroup, ("memory", "memory.limit_in_bytes"), "memory.max") == str(96 << 20)
        # v2 has a weight: runc's mapping of the shares, 1 + (256 - 2) * 9999 // 262142.
        assert cgroup_file(cgroup, ("cpu", "cpu.shares"), "cpu.weight") == ("10" if PURE_V2 else "256")

        # It ignores SIGTERM: StopContainer waits out the grace period, then SIGKILLs it.
        started = time.monotonic()
        cri.runtime.call("StopContainer", container_id=container, timeout=1)
        assert time.monotonic() - started >= 1
        st = status(cri, container)
        assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 137, "Error")
        cri.runtime.call("RemoveContainer", container_id=container)


def test_a_host_network_pod_with_a_shared_pid_namespace(cri, leaks) -> None:
    with pod(cri, network=pb.NODE, pid=pb.POD) as p:
        script = ("readlink /proc/self/ns/net; id -u; ps -o pid,args | grep -c '^ *1 /bin/sleep 2147483647$'; "
                  "awk '$2 == \"/\" {split($4, o, \",\"); print o[1]}' /proc/self/mounts; exit 3")
        container = start_container(cri, p, ["sh", "-c", script], user=1000, readonly_rootfs=True)
        assert eventually(lambda: status(cri, container).state == pb.CONTAINER_EXITED)
        st = status(cri, container)
        assert (st.exit_code, st.reason) == (3, "Error")
        lines = [line.split(" ", 3)[3] for line in log_of(cri, p).splitlines() if " stdout F " in line]
        # The host's network namespace; the uid asked for; the pause process as pid 1 of the
        # pod's shared pid namespace; a root mounted read-only.
        assert lines == [os.readlink("/proc/self/ns/net"), "1000", "1", "ro"]
        cri.runtime.call("RemoveContainer", container_id=container)


def test_a_container_security_context_and_a_terminal(cri, leaks) -> None:
    script = ("grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; wc -c < /proc/timer_list; "
              "grep -c ' /proc/sys proc ro,' /proc/self/mounts; tty")
    with pod(cri) as p:
        container = start_container(
            cri, p, ["sh", "-c", script], tty=True, no_new_privs=True,
            capabilities=pb.Capability(drop_capabilities=["ALL"], add_capabilities=["NET_BIND_SERVICE"]),
            masked_paths=["/proc/timer_list"], readonly_paths=["/proc/sys"])
        assert eventually(lambda: status(cri, container).state == pb.CONTAINER_EXITED)
        assert status(cri, container).exit_code == 0
        # With a terminal, everything comes through the console, which CRI logs as stdout.
        lines = [line.split(" ", 3)[3].strip() for line in log_of(cri, p).splitlines()]
        assert lines[0].split() == ["CapEff:", f"{1 << 10:016x}"]  # CAP_NET_BIND_SERVICE alone
        assert lines[1].split() == ["NoNewPrivs:", "1"]
        assert lines[2:] == ["0", "1", "/dev/pts/0"]  # /proc/timer_list masked, /proc/sys read-only
        cri.runtime.call("RemoveContainer", container_id=container)


def test_a_systemd_cgroup_parent_is_laid_out_as_systemd_would(cri, leaks) -> None:
    # kubelet's systemd cgroup driver sends a slice; CRI then writes cgroupsPath as
    # "<slice>:cri-containerd:<id>", which railcar lays out as systemd would, without D-Bus.
    slice_name = f"railcar_cri_{os.getpid()}.slice"
    try:
        with pod(cri, network=pb.NODE, cgroup_parent=f"/{slice_name}") as p:
            container = start_container(cri, p, ["sleep", "999"], memory=48 << 20)
            scope = f"/{slice_name}/cri-containerd-{container}.scope"
            assert cgroup_file(scope, ("memory", "memory.limit_in_bytes"), "memory.max") == str(48 << 20)
            # On v2, CRI gives the container a cgroup namespace of its own, so it sees itself at the root.
            own = "0::/\n" if PURE_V2 else f"memory:{scope}\n"
            assert own in exec_sync(cri, container, "cat", "/proc/self/cgroup")[0].decode()
            stats = cri.runtime.call("ContainerStats", container_id=container).stats
            assert stats.memory.working_set_bytes.value > 0
            cri.runtime.call("StopContainer", container_id=container, timeout=0)
            cri.runtime.call("RemoveContainer", container_id=container)
        assert not cgroups_of(slice_name), "cgroups left"
    finally:
        _remove_cgroup_parents(slice_name)


def test_a_pod_survives_a_containerd_restart(cri, leaks) -> None:
    with pod(cri) as p:
        container = start_container(cri, p, ["sleep", "999"])
        shims = processes_named("railcar-shim")
        cri.cd.restart()  # as an upgrade does: the shim and the containers carry on meanwhile
        assert processes_named("railcar-shim") == shims
        assert eventually(cri.runtime.ready)
        # CRI finds the pod and its container again through the shim's address file, and serves them.
        assert eventually(lambda: status(cri, container).state == pb.CONTAINER_RUNNING)
        assert exec_sync(cri, container, "echo", "still here") == (b"still here\n", b"", 0)
        cri.runtime.call("StopContainer", container_id=container, timeout=0)
        st = status(cri, container)
        assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 137)
        cri.runtime.call("RemoveContainer", container_id=container)


def test_an_oom_killed_container_is_reported_as_oomkilled(cri, leaks) -> None:
    with pod(cri) as p:
        # busybox tail keeps the last line of a file that has no newline: all of it.
        container = start_container(cri, p, ["tail", "/dev/zero"], memory=32 << 20)
        assert eventually(lambda: status(cri, container).state == pb.CONTAINER_EXITED, timeout=30)
        st = status(cri, container)
        assert (st.exit_code, st.reason) == (137, "OOMKilled")
        cri.runtime.call("RemoveContainer", container_id=container)


def test_a_restarted_container_gets_the_pod_sysctls_and_host_path_volumes(cri, leaks, tmp_path) -> None:
    volume, shared = tmp_path / "volume", tmp_path / "shared"
    volume.mkdir()
    (volume / "file").write_text("from the host\n")
    (shared / "sub").mkdir(parents=True)
    # HOST_TO_CONTAINER needs a shared (or slave) source mount, which / is not on this host.
    subprocess.run(["mount", "--bind", shared, shared], check=True)
    try:
        subprocess.run(["mount", "--make-shared", shared], check=True)
        shims_before = processes_named("railcar-shim")
        sysctls = {"kernel.shm_rmid_forced": "1", "net.ipv4.ip_unprivileged_port_start": "80"}
        with pod(cri, sysctls=sysctls) as p:
            crashed = start_container(cri, p, ["sh", "-c", "exit 1"])
            assert eventually(lambda: status(cri, crashed).state == pb.CONTAINER_EXITED)
            cri.runtime.call("RemoveContainer", container_id=crashed)
            # kubelet's restart: a new container in the same pod, and so in the same shim daemon.
            container = start_container(cri, p, ["sleep", "999"], mounts=(
                pb.Mount(container_path="/volume", host_path=str(volume), readonly=True),
                pb.Mount(container_path="/shared", host_path=str(shared),
                         propagation=pb.PROPAGATION_HOST_TO_CONTAINER)))
            assert len(processes_named("railcar-shim") - shims_before) == 1

            # The pod's sysctls, set in the pause container's ipc and network namespaces, which this
            # container joined; the host's own values are untouched.
            out, _, _ = exec_sync(cri, container, "cat", "/proc/sys/kernel/shm_rmid_forced",
                                  "/proc/sys/net/ipv4/ip_unprivileged_port_start")
            assert out.split() == [b"1", b"80"]
            assert Path("/proc/sys/kernel/shm_rmid_forced").read_text() == "0\n"

            script = "cat /volume/file; echo x > /volume/new 2>/dev/null || echo read-only"
            assert exec_sync(cri, container, "sh", "-c", script)[0] == b"from the host\nread-only\n"
            assert not (volume / "new").exists()

            # A mount made on the host after the start propagates into the container (rslave).
            subprocess.run(["mount", "-t", "tmpfs", "propagated", shared / "sub"], check=True)
            try:
                (shared / "sub" / "f").write_text("after start\n")
                assert exec_sync(cri, container, "cat", "/shared/sub/f")[0] == b"after start\n"
            finally:
                subprocess.run(["umount", shared / "sub"], check=True)
            cri.runtime.call("StopContainer", container_id=container, timeout=0)
            cri.runtime.call("RemoveContainer", container_id=container)
    finally:
        subprocess.run(["umount", shared], check=True)
