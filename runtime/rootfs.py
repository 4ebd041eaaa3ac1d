"""Build the container's root filesystem from inside its mount namespace (runs in the init).

Order (as runc): make ``/`` a slave (or the spec's rootfsPropagation), bind the rootfs onto
itself, mount the spec's mounts in order, populate ``/dev``, create ``linux.devices``; then
``pivot_root`` and detach the old root; then sysctls, readonly and masked paths, and a read-only
root last. Every target is opened inside the rootfs (``mounts.open_in_root``).
"""

import errno
import os
import stat
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

from . import mountinfo, procfs, syscalls as sc
from .cgroups.host import CGROUP_ROOT, unified_root
from .errors import RuntimeFailure
from .mounts import (PROPAGATION_FLAGS, apply_after, fd_path, locked_flags, mount_first,
                     labelled, open_in_root, parse_options, with_mount_label)
from .spec import Device, Mount, Spec

# (name, major, minor) of the devices every container gets when /dev is a fresh tmpfs.
DEFAULT_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                   ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))


@contextmanager
def _opened(root_fd: int, path: str, create: str | None = None) -> Iterator[int]:
    fd = open_in_root(root_fd, path, create)
    try:
        yield fd
    finally:
        os.close(fd)


def prepare(spec: Spec, userns: bool, idmapped_tree: Callable[[int], int]) -> None:
    """Everything before pivot_root: the rootfs bind, the spec's mounts, /dev and devices.
    `idmapped_tree(index)`: spec.mounts[index] as an idmapped detached mount, which the caller
    makes (our user namespace may not)."""
    root = spec.root_path
    propagation = PROPAGATION_FLAGS.get(spec.linux.rootfs_propagation, sc.MS_SLAVE | sc.MS_REC)
    sc.mount(None, "/", None, propagation)
    # pivot_root refuses a new root whose parent is shared, and our bind would propagate to the
    # host's namespace: make the mount the rootfs is on (containerd's snapshot is one of its own)
    # private if it is shared, as runc does; finalize() makes the new root shared if asked.
    point, shared = _mount_of(root)
    if shared:
        sc.mount(None, point, None, sc.MS_PRIVATE)
    sc.mount(root, root, None, sc.MS_BIND | sc.MS_REC)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    cgroupns = spec.linux.namespace("cgroup") is not None
    caps = (spec.process.raw.get("capabilities") or {}) if spec.process else {}
    # Without a cgroup namespace, a container that may mount cgroup2 itself (holds CAP_SYS_ADMIN:
    # bounding and permitted, no user namespace; a privileged pod) sees the whole v2 hierarchy, as
    # runc shows it: /proc/self/cgroup names a path from the host's root, which systemd, dockerd or
    # kind's node then look for there.
    whole = not cgroupns and not userns and all("CAP_SYS_ADMIN" in (caps.get(s) or []) for s in ("bounding", "permitted"))
    try:
        for i, m in enumerate(spec.mounts):
            where = f"mounts[{i}] ({m.type or 'bind'} on {m.destination})"
            try:
                _mount_entry(root_fd, m, spec.bundle, spec.linux.mount_label, cgroupns, whole, where,
                             idmapped_tree(i) if m.idmapped else -1)
            except OSError as e:
                refused = f" (options: {','.join(m.options)})" if e.errno == errno.EINVAL and m.options else ""
                raise RuntimeFailure("rootfs", f"{where}: {e.strerror}{refused}") from None
        dev_mounts = [m for m in spec.mounts if _in_root(m.destination) == "/dev"]
        if any(m.is_bind for m in dev_mounts):
            return   # a directory of the host's (its /dev, say): never ours to make nodes or links in
        if dev_mounts:
            _populate_dev(root_fd, spec.linux.devices, userns)
        for i, dev in enumerate(spec.linux.devices):
            if dev_mounts and _in_root(dev.path) == "/dev/ptmx":
                continue   # the pts/ptmx link _populate_dev made stands for it (a privileged spec lists the host's)
            try:
                _make_device(root_fd, dev, userns)
            except OSError as e:
                raise RuntimeFailure("rootfs", f"linux.devices[{i}] ({dev.path}): "
                                               f"{e.strerror}") from None
    finally:
        os.close(root_fd)


def _in_root(path: str) -> str:
    """A path of the spec's as the rootfs resolves it: "//dev" and "/dev/" are /dev (normpath keeps
    the leading "//", which POSIX lets mean something else)."""
    return os.path.normpath("/" + path.lstrip("/"))


def _mount_of(path: str) -> tuple[str, bool]:
    """The mount point of the (topmost) mount ``path`` lives on, and whether that mount is shared."""
    found = ("/", False)
    for m in mountinfo.read():  # in mount order: a later mount on the same point is on top
        if (path == m.point or path.startswith(m.point.rstrip("/") + "/")) and len(m.point) >= len(found[0]):
            found = (m.point, any(o.startswith("shared:") for o in m.optional))
    return found


def _mount_entry(root_fd: int, m: Mount, bundle: str, mount_label: str, cgroupns: bool, whole: bool,
                 where: str, tree: int) -> None:
    opts = with_mount_label(parse_options(m.options, m.destination), m.type, mount_label)
    if m.type == "cgroup":
        readonly = bool(opts.flags & sc.MS_RDONLY or opts.recursive[0] & sc.MOUNT_ATTR_RDONLY)
        _mount_cgroups(root_fd, m.destination, readonly, mount_label, cgroupns, whole, where)
        return
    source = m.source or m.type
    kind = "dir"
    if opts.is_bind or m.type == "bind":
        if not opts.is_bind:
            opts = parse_options(("rbind", *m.options), m.destination)
        source = os.path.join(bundle, m.source)
        # An idmapped tree tells itself: its source may be beyond what our user namespace may stat.
        kind = "dir" if (stat.S_ISDIR(os.fstat(tree).st_mode) if tree >= 0 else os.path.isdir(source)) else "file"
    with _opened(root_fd, m.destination, kind) as target:
        procfs.check_mount_target(root_fd, target, m.type, opts.is_bind, source, m.destination, where)
        if tree >= 0:   # made by the caller, outside our user namespace (idmapping needs that)
            sc.attach(tree, target, source)
            top = tree
        elif opts.is_bind:
            # Its flags (ro...) go to the new mount's own fd: a second lookup of the destination could
            # be sent elsewhere by another container swapping a shared volume's directory for a link.
            top = sc.bind_onto(source, target, bool(opts.flags & sc.MS_REC))
        else:
            mount_first(source, fd_path(target), m.type, opts)
            top = -1
    if top < 0:   # a filesystem took its flags with it; propagation and recursive attributes are left
        top = open_in_root(root_fd, m.destination)
    try:
        apply_after(fd_path(top), opts)
        if mount_label and m.type == "mqueue":
            os.setxattr(fd_path(top), "security.selinux", mount_label.encode())
    finally:
        os.close(top)


def _own_cgroups() -> dict[str, str]:
    """controllers field of /proc/self/cgroup ("cpu,cpuacct", "name=systemd", "") -> path."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            out[controllers] = path
    return out


def _mount_cgroups(root_fd: int, dest: str, readonly: bool, mount_label: str, cgroupns: bool, whole: bool,
                   where: str) -> None:
    """Our own cgroup at ``dest``: on a cgroup v2 host, the unified hierarchy's view of it;
    otherwise a tmpfs with each v1 hierarchy's view of it in a directory of its own.

    Only the container's own cgroup subtree is reachable, never the host's parents, except with
    `whole` on a v2 host (a container that could mount the hierarchy itself): a bind of the whole
    hierarchy. Not a new mount, as runc makes: a cgroup2 mount in the host's cgroup namespace sets
    the hierarchy's options (nsdelegate, memory_recursiveprot) for the whole host. In a cgroup
    namespace each view is a new mount of the hierarchy, whose root the kernel then shows as the
    namespace's (our cgroup, as runc does it); there, /proc/self/cgroup reads "/" and a bind
    from it would be of the host's root. Outside one, it is a bind of our cgroup's directory. A
    hybrid host's cgroup2 tree (/sys/fs/cgroup/unified) is left out, as runc leaves it out: the
    container has no cgroup of its own there, so it would see the host's.
    """
    own = _own_cgroups()
    flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | (sc.MS_RDONLY if readonly else 0)
    mounts = mountinfo.read()

    @contextmanager
    def target() -> Iterator[int]:
        with _opened(root_fd, dest, "dir") as fd:
            procfs.check_mount_target(root_fd, fd, "cgroup", False, "cgroup", dest, where)
            yield fd

    if unified_root(mounts) is not None:
        _mount_view(target, "cgroup2", CGROUP_ROOT if whole else CGROUP_ROOT + own[""], None, flags, cgroupns)
        return
    with target() as fd:
        sc.mount("tmpfs", fd_path(fd), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                 labelled("mode=755", mount_label))
    with open("/proc/cgroups") as f:
        subsystems = {line.split()[0] for line in f if not line.startswith("#")}
    # The tmpfs is ours alone and empty: its entries are made and opened relative to its root
    # (no symlink can be in it), instead of resolving dest inside the rootfs for each of them.
    with _opened(root_fd, dest) as top:
        for m in mounts:
            if m.fstype != "cgroup" or not m.point.startswith(CGROUP_ROOT + "/"):
                continue
            name = os.path.basename(m.point)
            key = hierarchy_key(m.super_options, subsystems)
            if key not in own:
                continue
            try:
                os.mkdir(name, 0o755, dir_fd=top)
            except FileExistsError:   # a hierarchy listed twice (stacked mounts)
                pass
            _mount_view(lambda: _opened_entry(top, name), "cgroup", m.point + own[key], key, flags, cgroupns)
        for entry in os.listdir(CGROUP_ROOT):  # cpu -> cpu,cpuacct and friends
            host = os.path.join(CGROUP_ROOT, entry)
            if os.path.islink(host):
                os.symlink(os.readlink(host), entry, dir_fd=top)
        if readonly:
            sc.mount(None, fd_path(top), None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID
                     | sc.MS_NODEV | sc.MS_NOEXEC, "mode=755")


def hierarchy_key(super_options: str, subsystems: set[str]) -> str:
    """A v1 hierarchy's controllers and name from its mount options, as /proc/self/cgroup lists them
    ("cpu,cpuacct", "name=systemd"): not its other options (systemd mounts its own with xattr;
    clone_children, noprefix...)."""
    return ",".join(o for o in super_options.split(",") if o in subsystems or o.startswith("name="))


def _mount_view(opened: Callable[[], ContextManager[int]], fstype: str, own_dir: str, hierarchy: str | None,
                flags: int, cgroupns: bool) -> None:
    """Mount one hierarchy's view of our cgroup on the directory `opened()` opens (see _mount_cgroups)."""
    with opened() as target:
        if cgroupns:  # the sources runc gives them: "cgroup" (as the spec's mount), "systemd" for that one
            sc.mount("systemd" if hierarchy == "name=systemd" else "cgroup", fd_path(target), fstype, flags, hierarchy)
            return
        bound = sc.bind_onto(own_dir, target, recursive=True)
    try:
        sc.mount(None, fd_path(bound), None, sc.MS_BIND | sc.MS_REMOUNT | flags)
    finally:
        os.close(bound)


@contextmanager
def _opened_entry(dir_fd: int, name: str) -> Iterator[int]:
    """O_PATH fd of directory ``name`` in ``dir_fd``, never through a symlink."""
    fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _populate_dev(root_fd: int, devices: tuple[Device, ...], userns: bool) -> None:
    """Default devices, the fd links, /dev/ptmx and /dev/shm on a /dev the spec mounted (not a bind).
    /dev/ptmx is always the link to the container's devpts, as runc makes it: a node of the host's
    ptmx would open a pty there too (the kernel looks for `pts` beside it), but programs that look
    at the path would see another device. The spec's own devices (`devices`) are made after."""
    wanted = {_in_root(d.path) for d in devices}
    for name, major, minor in DEFAULT_DEVICES:
        if f"/dev/{name}" not in wanted:
            _make_device(root_fd, Device(f"/dev/{name}", "c", major, minor), userns)
    # /dev/core as runc makes it, where the kernel has /proc/kcore (masked paths cover that file).
    core = (("core", "/proc/kcore"),) if os.path.exists("/proc/kcore") else ()
    with _opened(root_fd, "/dev") as dev:
        for name, target in (*DEV_LINKS, *core, ("ptmx", "pts/ptmx")):
            _symlink(target, name, dev)
    os.close(open_in_root(root_fd, "/dev/shm", "dir"))


def _symlink(target: str, name: str, dir_fd: int) -> None:
    try:
        os.symlink(target, name, dir_fd=dir_fd)
    except FileExistsError:
        pass


def _make_device(root_fd: int, dev: Device, userns: bool) -> None:
    """mknod, or (in a user namespace, where mknod is refused) bind the host's node."""
    parent, _, name = dev.path.strip("/").rpartition("/")
    with _opened(root_fd, parent, "dir") as pfd:
        try:
            there = os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            there = None
        # runtime-spec: an existing file that is not the device is an error (runc leaves it be);
        # a node, or a symlink such as the /dev/ptmx made for /dev, is replaced.
        if there is not None and not (stat.S_ISCHR(there) or stat.S_ISBLK(there) or stat.S_ISFIFO(there)
                                      or stat.S_ISLNK(there)):
            raise FileExistsError(errno.EEXIST, "something that is not a device node is there already")
        if userns:
            if dev.type == "p":
                os.mkfifo(name, dev.file_mode & 0o7777, dir_fd=pfd)
            else:
                host = _host_device(dev)
                with _opened(root_fd, dev.path, "file") as target:
                    sc.mount(host, fd_path(target), None, sc.MS_BIND)
            return
        kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
        try:
            os.unlink(name, dir_fd=pfd)
        except (FileNotFoundError, IsADirectoryError):
            pass
        os.mknod(name, kind[dev.type] | (dev.file_mode & 0o7777), os.makedev(dev.major, dev.minor),
                 dir_fd=pfd)
        os.chmod(name, dev.file_mode & 0o7777, dir_fd=pfd)  # mknod's mode passed the umask
        os.chown(name, dev.uid, dev.gid, dir_fd=pfd, follow_symlinks=False)


def _host_device(dev: Device) -> str:
    """The host node with the same numbers (a user namespace can only bind existing nodes)."""
    try:
        st = os.stat(dev.path)
        if os.major(st.st_rdev) == dev.major and os.minor(st.st_rdev) == dev.minor:
            return dev.path
    except FileNotFoundError:
        pass
    raise RuntimeFailure("rootfs", f"{dev.path}: no host device {dev.major}:{dev.minor} to bind "
                                   "into a user namespace")


def pivot(root: str) -> None:
    """pivot_root into ``root`` and detach the old root, leaving no host path reachable."""
    old = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    new = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        sc.pivot_root(".", ".")
        # The old root is now stacked under the new one at "."; make it a slave so detaching
        # it cannot propagate an unmount back to the host, then drop it.
        os.fchdir(old)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old)
        os.close(new)


def finalize(spec: Spec) -> None:
    """After pivot_root: root propagation, hostname, sysctls, readonly and masked paths, then
    a read-only root."""
    propagation = PROPAGATION_FLAGS.get(spec.linux.rootfs_propagation, 0)
    if propagation & sc.MS_SHARED:
        sc.mount(None, "/", None, propagation)
    if spec.hostname is not None:
        sc.sethostname(spec.hostname)
    if spec.domainname is not None:
        sc.setdomainname(spec.domainname)
    for key, value in spec.linux.sysctl:
        try:
            procfs.write("sys/" + key.replace(".", "/"), value)
        except OSError as e:
            raise RuntimeFailure("rootfs", f"linux.sysctl.{key}: {e.strerror}") from None
    root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path in spec.linux.readonly_paths:
            _readonly(root_fd, path)
        for path in spec.linux.masked_paths:
            _mask(root_fd, path, spec.linux.mount_label)
    finally:
        os.close(root_fd)
    if spec.root_readonly:
        sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | locked_flags("/"))


def _readonly(root_fd: int, path: str) -> None:
    try:
        fd = open_in_root(root_fd, path)
    except FileNotFoundError:
        return
    try:
        top = sc.bind_onto(fd_path(fd), fd, recursive=True)
    finally:
        os.close(fd)
    try:
        sc.mount(None, fd_path(top), None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | locked_flags(fd_path(top)))
    finally:
        os.close(top)


def _mask(root_fd: int, path: str, mount_label: str) -> None:
    try:
        fd = open_in_root(root_fd, path)
    except FileNotFoundError:
        return
    try:
        if stat.S_ISDIR(os.stat(fd_path(fd)).st_mode):
            sc.mount("tmpfs", fd_path(fd), "tmpfs", sc.MS_RDONLY, labelled("", mount_label))
        else:
            _mask_file(root_fd, fd, path)
    finally:
        os.close(fd)


def _mask_file(root_fd: int, fd: int, path: str) -> None:
    """Bind the container's /dev/null over the file ``fd``. The image's own /dev (no /dev mount in
    the spec) could make it anything, even a link to a writable /proc file: runc refuses to mask
    with that, and so does railcar."""
    try:
        null = open_in_root(root_fd, "/dev/null")
    except OSError as e:
        raise RuntimeFailure("rootfs", f"linux.maskedPaths: cannot mask {path}: the container's /dev/null: "
                                       f"{os.strerror(e.errno)}") from None
    try:
        st = os.fstat(null)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
            raise RuntimeFailure("rootfs", f"linux.maskedPaths: cannot mask {path}: the container's "
                                           "/dev/null is not the null device")
        sc.mount(fd_path(null), fd_path(fd), None, sc.MS_BIND)
    finally:
        os.close(null)
