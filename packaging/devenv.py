"""A private containerd and a locally built busybox image, for the demo, the tests and the benchmarks.

Nothing here touches the machine's own containerd: root, state and sockets all live under a directory
the caller names, and the daemon is stopped by pid. Standard library only, so the demo can run it
before anything else is installed and the tests can import it by path.

    python packaging/devenv.py demo WORKDIR     # start containerd, import busybox, run a container, stop
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_REF = "railcar.local/busybox:latest"
NAMESPACE = "railcar"
BUSYBOX = "/bin/busybox"
CGROUP_ROOT = "/sys/fs/cgroup"
# sun_path holds 108 bytes; containerd also creates "<address>.ttrpc".
_SOCKET_PATH_LIMIT = 100

_CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{address}"

[ttrpc]
  address = "{address}.ttrpc"

[debug]
  level = "{log_level}"
"""

# containerd's CRI plugin (what kubelet talks to) with a `railcar` runtime handler, which pods
# choose as a RuntimeClass makes them (runc stays the default). Pod network namespaces stay under
# the private state directory; oom_score_adj is clamped to containerd's own (the pause spec asks for
# -998, which this host refuses, see the README).
_CRI_CONFIG = """
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.railcar]
      runtime_type = "io.containerd.railcar.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf_dir}"
"""
CRI_NAMESPACE = "k8s.io"
PAUSE_IMAGE_REF = "railcar.local/pause:latest"


def cgroup_hierarchies() -> list[str]:
    """Each cgroup hierarchy's root, where a cgroup path is looked for: /sys/fs/cgroup itself on a
    pure v2 host; else each hierarchy mounted under it (the v1 controllers, and a hybrid host's
    unified tree), not the links to them (cpu -> cpu,cpuacct)."""
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        return [CGROUP_ROOT]
    return [path for path in (os.path.join(CGROUP_ROOT, name) for name in sorted(os.listdir(CGROUP_ROOT)))
            if os.path.isdir(path) and not os.path.islink(path)]


def _live(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (an orphan's new parent may be slow to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Containerd:
    """A running private containerd; `ctr()` talks to it, `stop()` ends it (and only it)."""

    workdir: Path
    address: str
    root: Path
    state: Path
    config: Path
    log_path: Path
    env: dict[str, str]
    namespace: str = NAMESPACE
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def ttrpc_address(self) -> str:
        return self.address + ".ttrpc"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def bundle(self, container_id: str) -> Path:
        """The state bundle containerd makes for a task (reference shim-protocol.md §1.2)."""
        return self.state / "io.containerd.runtime.v2.task" / self.namespace / container_id

    def ctr(self, *args: str, input: bytes | None = None, timeout: float = 120,
            check: bool = False) -> subprocess.CompletedProcess:
        cmd = ["ctr", "--address", self.address, "--namespace", self.namespace, *args]
        return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, check=check,
                              env=self.env)

    def start(self) -> None:
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                ["containerd", "--config", str(self.config)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, env=self.env, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"containerd exited with {self.process.returncode}; see {self.log_path}")
            if os.path.exists(self.address) and self.ctr("version", timeout=10).returncode == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"containerd did not come up within 30 s; see {self.log_path}")

    def started_processes(self, *comms: str) -> list[int]:
        """Live processes named one of `comms` that this containerd's shims started (containerd puts
        TTRPC_ADDRESS in their environment): its railcar zygotes and their spare daemons."""
        mine = f"TTRPC_ADDRESS={self.ttrpc_address}".encode()
        found = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and _live(int(entry)) and Path(f"/proc/{entry}/comm").read_text().strip() in comms \
                        and mine in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except OSError:
                continue
        return found

    def stop_zygotes(self, timeout: float = 10.0) -> list[int]:
        """SIGTERM, by pid, the railcar zygotes this containerd's shims started (a zygote removes its
        socket), and wait for them and for their spare daemons (a spare goes when its zygote closes
        their connection); other zygotes on the node are left alone. Returns those still there
        after `timeout` seconds. A zygote otherwise leaves after its idle time (10 minutes)."""
        for pid in self.started_processes("railcar-zygote"):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while (left := self.started_processes("railcar-zygote", "railcar-spare")) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def stop(self) -> None:
        """SIGTERM containerd and wait; its shims are left alone, as systemd's KillMode=process does."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._remove_namespace_cgroups()

    def _remove_namespace_cgroups(self) -> None:
        """ctr puts containers under /<namespace>/<id>; runtimes remove the leaf, not the parent.
        Remove the parent once empty (a container still running keeps it)."""
        for hierarchy in cgroup_hierarchies():
            try:
                os.rmdir(os.path.join(hierarchy, self.namespace))
            except OSError:
                pass

    def restart(self) -> None:
        self.stop()
        self.start()


def start_containerd(workdir: Path, *, extra_path: list[str] = (), log_level: str = "info",
                     cri: bool = False) -> Containerd:
    """Start containerd with private root, state and sockets under `workdir`.

    `extra_path` goes in front of PATH so containerd finds shims such as containerd-shim-railcar-v2.
    With `cri`, its CRI plugin serves on the same address (handlers `railcar` and `runc`, pause image
    PAUSE_IMAGE_REF, CNI configuration from `workdir`/net.d) and `ctr` works in its namespace.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sock_dir = workdir
    if len(str(workdir / "c.sock.ttrpc")) > _SOCKET_PATH_LIMIT:
        sock_dir = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    address = str(sock_dir / "c.sock")
    root, state = workdir / "root", workdir / "state"
    config = workdir / "config.toml"
    text = _CONFIG.format(root=root, state=state, address=address, log_level=log_level)
    if cri:
        cni_conf_dir = workdir / "net.d"
        cni_conf_dir.mkdir(exist_ok=True)
        text = text.replace('  "io.containerd.grpc.v1.cri",\n', "") + _CRI_CONFIG.format(
            pause_image=PAUSE_IMAGE_REF, cni_conf_dir=cni_conf_dir)
    config.write_text(text)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([*map(str, extra_path), env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
    cd = Containerd(workdir=workdir, address=address, root=root, state=state, config=config,
                    log_path=workdir / "containerd.log", env=env, namespace=CRI_NAMESPACE if cri else NAMESPACE)
    cd.start()
    return cd


def busybox_rootfs(target: Path) -> Path:
    """Lay out a minimal busybox-static root filesystem: one binary, its applets as symlinks."""
    target = Path(target)
    for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "run", "var"):
        (target / d).mkdir(parents=True, exist_ok=True)
    (target / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, target / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = target / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (target / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (target / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return target


def _blob(blobs: dict[str, bytes], data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def build_busybox_image(out: Path, ref: str = IMAGE_REF, entrypoint: list[str] | None = None) -> Path:
    """Write an OCI image archive of the busybox rootfs to `out`, named `ref`; no registry involved.
    With `entrypoint`, the image runs that instead of `sh` (a pod's pause image: `sleep`)."""
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = busybox_rootfs(Path(tmp) / "rootfs")
        layer_tar = io.BytesIO()
        with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(rootfs.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
        layer = layer_tar.getvalue()
    blobs: dict[str, bytes] = {}
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                  **_blob(blobs, gzip.compress(layer, mtime=0))}
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "WorkingDir": "/", **({"Entrypoint": entrypoint} if entrypoint else {"Cmd": ["sh"]})},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_blob(blobs, json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                     **_blob(blobs, json.dumps(manifest).encode()),
                     "annotations": {"io.containerd.image.name": ref,
                                     "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    with tarfile.open(out, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add("blobs/sha256/" + digest.split(":", 1)[1], data)
    return Path(out)


def busybox_image(cd: Containerd, ref: str = IMAGE_REF, entrypoint: list[str] | None = None) -> str:
    """Build the busybox image and import it into `cd` (its namespace); returns the image reference."""
    archive = cd.workdir / "busybox-oci.tar"
    build_busybox_image(archive, ref, entrypoint)
    result = cd.ctr("images", "import", str(archive))
    if result.returncode != 0:
        raise RuntimeError(f"ctr images import failed: {result.stderr.decode(errors='replace')}")
    return ref


def _demo(workdir: Path) -> int:
    """The README's main job: a private containerd, the busybox image, one container run through railcar."""
    venv_bin = Path(sys.executable).parent
    cd = start_containerd(workdir, extra_path=[str(venv_bin)])
    try:
        image = busybox_image(cd)
        print(f"containerd (pid {cd.pid}) at {cd.address}, image {image} imported", flush=True)
        cmd = ["run", "--rm", "--runtime", "io.containerd.railcar.v2", image, f"demo-{os.getpid()}",
               "sh", "-c", "echo hello from railcar: pid $$, hostname $(hostname), uid $(id -u); ls /"]
        print("$ ctr " + " ".join(cmd), flush=True)
        result = cd.ctr(*cmd, timeout=60)
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        print(f"exit status {result.returncode}", flush=True)
        return result.returncode
    finally:
        cd.stop()
        cd.stop_zygotes()   # or it idles on for 10 minutes, ready for this containerd's next start


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "demo":
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(_demo(Path(sys.argv[2])))
