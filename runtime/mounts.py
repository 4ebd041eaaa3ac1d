"""Mount option parsing, symlink-safe mount targets, and the rootfs layers the shim mounts.

Options are fstab-style strings (containerd's and runtime-spec's vocabulary): known words become
mount flags or propagation changes, anything else is filesystem data. Targets inside a container
rootfs are opened with openat2(RESOLVE_IN_ROOT) and mounted through /proc/self/fd, so a symlink in
an image (``/proc -> /host/etc``) can never redirect a mount onto the host.
"""

import dataclasses
import errno
import os
import stat
from dataclasses import dataclass

from . import mountinfo, syscalls as sc
from .errors import RuntimeFailure

# word -> (flags to set, flags to clear)
_FLAG_WORDS: dict[str, tuple[int, int]] = {
    "async": (0, sc.MS_SYNCHRONOUS), "atime": (0, sc.MS_NOATIME), "bind": (sc.MS_BIND, 0),
    "defaults": (0, 0), "dev": (0, sc.MS_NODEV), "diratime": (0, sc.MS_NODIRATIME),
    "dirsync": (sc.MS_DIRSYNC, 0), "exec": (0, sc.MS_NOEXEC), "mand": (sc.MS_MANDLOCK, 0),
    "noatime": (sc.MS_NOATIME, 0), "nodev": (sc.MS_NODEV, 0),
    "nodiratime": (sc.MS_NODIRATIME, 0), "noexec": (sc.MS_NOEXEC, 0),
    "nomand": (0, sc.MS_MANDLOCK), "norelatime": (0, sc.MS_RELATIME),
    "nostrictatime": (0, sc.MS_STRICTATIME), "nosuid": (sc.MS_NOSUID, 0),
    "nosymfollow": (sc.MS_NOSYMFOLLOW, 0), "rbind": (sc.MS_BIND | sc.MS_REC, 0),
    "relatime": (sc.MS_RELATIME, 0), "remount": (sc.MS_REMOUNT, 0), "ro": (sc.MS_RDONLY, 0),
    "rw": (0, sc.MS_RDONLY), "strictatime": (sc.MS_STRICTATIME, 0), "suid": (0, sc.MS_NOSUID),
    "sync": (sc.MS_SYNCHRONOUS, 0),
}
PROPAGATION_FLAGS: dict[str, int] = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# Recursive words (runc's): word -> (mount_setattr attribute, set?) on the mount and every mount
# below it. The access-time words choose one value of a field (so all of the field is cleared first).
_RECURSIVE_WORDS: dict[str, tuple[int, bool]] = {
    "rro": (sc.MOUNT_ATTR_RDONLY, True), "rrw": (sc.MOUNT_ATTR_RDONLY, False),
    "rnosuid": (sc.MOUNT_ATTR_NOSUID, True), "rsuid": (sc.MOUNT_ATTR_NOSUID, False),
    "rnodev": (sc.MOUNT_ATTR_NODEV, True), "rdev": (sc.MOUNT_ATTR_NODEV, False),
    "rnoexec": (sc.MOUNT_ATTR_NOEXEC, True), "rexec": (sc.MOUNT_ATTR_NOEXEC, False),
    "rnodiratime": (sc.MOUNT_ATTR_NODIRATIME, True), "rdiratime": (sc.MOUNT_ATTR_NODIRATIME, False),
    "rnosymfollow": (sc.MOUNT_ATTR_NOSYMFOLLOW, True), "rsymfollow": (sc.MOUNT_ATTR_NOSYMFOLLOW, False),
}
# Undoing noatime or strictatime, or relatime, leaves the kernel's default: relatime (runc's reading).
_RECURSIVE_ATIME = {"rrelatime": sc.MOUNT_ATTR_RELATIME, "rnoatime": sc.MOUNT_ATTR_NOATIME,
                    "rstrictatime": sc.MOUNT_ATTR_STRICTATIME, "ratime": sc.MOUNT_ATTR_RELATIME,
                    "rnostrictatime": sc.MOUNT_ATTR_RELATIME, "rnorelatime": sc.MOUNT_ATTR_RELATIME}
IDMAP_WORDS = ("idmap", "ridmap")
# Every option word a mount in config.json may carry (what `features` reports).
MOUNT_OPTIONS = (*_FLAG_WORDS, *PROPAGATION_FLAGS, *_RECURSIVE_WORDS, *_RECURSIVE_ATIME, *IDMAP_WORDS)
# Flags a read-only bind remount must keep, or the kernel refuses to drop them (EPERM).
_LOCKED = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME | sc.MS_NODIRATIME \
    | sc.MS_RELATIME | sc.MS_STRICTATIME
# Overlay option strings longer than this do not fit the kernel's one-page mount data.
_MAX_DATA = os.sysconf("SC_PAGESIZE") - 512


@dataclass(frozen=True)
class MountOptions:
    flags: int
    propagation: tuple[int, ...]
    data: str
    recursive: tuple[int, int] = (0, 0)  # mount_setattr attributes to set and to clear, recursively

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def parse_options(options: list[str] | tuple[str, ...], where: str = "options") -> MountOptions:
    """Split fstab-style words into flags, propagation changes, recursive attributes and fs data."""
    flags, propagation, data = 0, [], []
    rec_set = rec_clear = 0
    for word in options:
        if word in _FLAG_WORDS:
            set_, clear = _FLAG_WORDS[word]
            flags = (flags | set_) & ~clear
        elif word in PROPAGATION_FLAGS:
            propagation.append(PROPAGATION_FLAGS[word])
        elif word in _RECURSIVE_WORDS:
            bit, on = _RECURSIVE_WORDS[word]
            rec_set, rec_clear = (rec_set | bit, rec_clear & ~bit) if on else (rec_set & ~bit, rec_clear | bit)
        elif word in _RECURSIVE_ATIME:
            rec_set = rec_set & ~sc.MOUNT_ATTR__ATIME | _RECURSIVE_ATIME[word]
            rec_clear |= sc.MOUNT_ATTR__ATIME
        elif word == "loop":
            raise RuntimeFailure("rootfs", f"{where}: loop devices are not supported")
        elif word in IDMAP_WORDS:
            continue   # the caller idmaps the bind (spec.Mount.uid_mappings): nothing to mount(2)
        else:
            data.append(word)
    return MountOptions(flags, tuple(propagation), ",".join(data), (rec_set, rec_clear))


# Filesystems that take no SELinux context= option from the mount label (as runc): proc and sysfs
# keep their own labels, an mqueue mount is labelled as a file instead.
_NO_CONTEXT = ("proc", "sysfs", "mqueue", "cgroup", "cgroup2")


def labelled(data: str, label: str) -> str:
    """Mount data with the SELinux `context=` for `label` added (unchanged without a label)."""
    if not label:
        return data
    context = f'context="{label}"'
    return f"{data},{context}" if data else context


def with_mount_label(opts: MountOptions, fstype: str, label: str) -> MountOptions:
    """`opts` with `label` added to a filesystem mount's data (a bind keeps the labels of what it
    binds)."""
    if opts.is_bind or fstype in _NO_CONTEXT:
        return opts
    return dataclasses.replace(opts, data=labelled(opts.data, label))


def mount_first(source: str, target: str, fstype: str, opts: MountOptions) -> None:
    """The mount call itself; a bind's other flags need ``apply_after`` on the new mount."""
    if opts.is_bind:
        sc.mount(source, target, None, opts.flags & (sc.MS_BIND | sc.MS_REC))
    else:
        sc.mount(source, target, fstype or None, opts.flags, opts.data or None)


def apply_after(target: str, opts: MountOptions) -> None:
    """Remount a bind with its flags (ro, nosuid, ...) and apply propagation changes.

    ``target`` must name the new mount (a path, or a freshly opened fd), not the covered dir.
    """
    if opts.is_bind:
        extra = opts.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        if extra:
            sc.mount(None, target, None,
                     sc.MS_BIND | sc.MS_REMOUNT | extra | locked_flags(target))
    for prop in opts.propagation:
        sc.mount(None, target, None, prop)
    if opts.recursive != (0, 0):
        sc.mount_setattr_recursive(target, *opts.recursive)


def mount_one(source: str, target: str, fstype: str, opts: MountOptions) -> None:
    """Mount with the two-step dance bind mounts need for ro/nosuid/... to take effect."""
    mount_first(source, target, fstype, opts)
    apply_after(target, opts)


def locked_flags(target: str) -> int:
    """The per-mount flags already on ``target`` that a bind remount must keep."""
    st = os.statvfs(target)
    mapping = {os.ST_NOSUID: sc.MS_NOSUID, os.ST_NODEV: sc.MS_NODEV, os.ST_NOEXEC: sc.MS_NOEXEC,
               os.ST_NOATIME: sc.MS_NOATIME, os.ST_NODIRATIME: sc.MS_NODIRATIME,
               os.ST_RELATIME: sc.MS_RELATIME}
    return sum(flag for st_flag, flag in mapping.items() if st.f_flag & st_flag) & _LOCKED


def mount_layers(mounts: list[dict], target: str) -> None:
    """Mount containerd's rootfs mounts onto ``target`` in order.

    Each mount is ``{type, source, options[, target]}`` (``target``, from containerd 2.x, is a
    path under ``target``). On failure everything this call mounted is unmounted again and a
    ``RuntimeFailure`` names the failing mount.
    """
    done = 0
    try:
        for i, m in enumerate(mounts):
            where = f"rootfs[{i}]"
            if not isinstance(m, dict) or not isinstance(m.get("type", ""), str):
                raise RuntimeFailure("rootfs", f"{where}: must be an object with a string type")
            opts = parse_options(m.get("options") or [], f"{where}.options")
            dest = target
            if m.get("target"):
                dest = os.path.join(target, m["target"].lstrip("/"))
            fstype = m.get("type") or ""
            source = m.get("source") or fstype
            data_fd = None
            if fstype == "overlay" and len(opts.data) > _MAX_DATA:
                opts, data_fd = _shorten_overlay(opts)
            try:
                mount_one(source, dest, "" if fstype == "bind" else fstype, opts)
            except OSError as e:
                raise RuntimeFailure("rootfs", f"{where}: mounting {fstype} {source} on {dest}: "
                                               f"{e.strerror}") from None
            finally:
                if data_fd is not None:
                    os.close(data_fd)
            done += 1
    except BaseException:
        if done:
            unmount_all(target)
        raise


def _shorten_overlay(opts: MountOptions) -> tuple[MountOptions, int]:
    """Rewrite overlay lowerdirs relative to an fd of their common parent to fit one page."""
    parts = opts.data.split(",")
    lower_i = next((i for i, p in enumerate(parts) if p.startswith("lowerdir=")), None)
    if lower_i is None:
        raise RuntimeFailure("rootfs", "overlay options too long and no lowerdir to shorten")
    lowers = parts[lower_i][len("lowerdir="):].split(":")
    common = os.path.commonpath(lowers)
    fd = os.open(common, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    base = f"/proc/self/fd/{fd}"
    parts[lower_i] = "lowerdir=" + ":".join(base + low[len(common):] for low in lowers)
    data = ",".join(parts)
    if len(data) > _MAX_DATA:
        os.close(fd)
        raise RuntimeFailure("rootfs", f"overlay options are {len(data)} bytes even shortened")
    return dataclasses.replace(opts, data=data), fd


def mount_points() -> list[str]:
    """This namespace's mount points in the order the kernel lists them (parents before children)."""
    return [m.point for m in mountinfo.read()]


def unmount_all(target: str) -> None:
    """Unmount everything at or under ``target``, deepest and most recent first.

    No error when nothing is mounted; stacked mounts on one point are all removed.
    """
    target = os.path.realpath(target)
    prefix = target.rstrip("/") + "/"
    while True:
        points = [p for p in mount_points() if p == target or p.startswith(prefix)]
        if not points:
            return
        # Deepest path first; among equals the last listed is the top of the stack.
        victim = max(reversed(points), key=lambda p: p.count("/"))
        try:
            sc.umount2(victim, sc.UMOUNT_NOFOLLOW)
        except OSError as e:
            if e.errno != 16:  # EBUSY: detach it; it goes away when its last user does
                raise RuntimeFailure("rootfs", f"unmounting {victim}: {e.strerror}") from None
            sc.umount2(victim, sc.MNT_DETACH | sc.UMOUNT_NOFOLLOW)


def open_in_root(root_fd: int, path: str, create: str | None = None) -> int:
    """Open ``path`` (O_PATH) as seen from ``root_fd``, with symlinks confined to that root.

    ``create`` is "dir" or "file" to make a missing target and its missing parents (as dirs),
    following symlinks the way the container will see them: ``/a -> /b`` creates ``<root>/b``.
    """
    resolve = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
    try:
        return sc.openat2(root_fd, path.strip("/") or ".", os.O_PATH, resolve)
    except FileNotFoundError:
        if create is None:
            raise
    real = _walk_creating(root_fd, path, create)
    # No symlinks left in ``real``: refuse any that a racing writer might swap in.
    return sc.openat2(root_fd, real or ".", os.O_PATH, resolve | sc.RESOLVE_NO_SYMLINKS)


_MAX_LINKS = 40


def _walk_creating(root_fd: int, path: str, create: str) -> str:
    """Resolve ``path`` component by component inside the root, creating what is missing.

    Returns the symlink-free path relative to the root.
    """
    done: list[str] = []
    todo = [c for c in path.split("/") if c]
    links = 0
    while todo:
        name = todo.pop(0)
        if name == ".":
            continue
        if name == "..":
            done = done[:-1]
            continue
        parent = sc.openat2(root_fd, "/".join(done) or ".", os.O_PATH | os.O_DIRECTORY,
                            sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_SYMLINKS)
        try:
            try:
                st = os.lstat(name, dir_fd=parent)
            except FileNotFoundError:
                if todo or create == "dir":
                    os.mkdir(name, 0o755, dir_fd=parent)
                else:
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
                                     | os.O_NOFOLLOW, 0o644, dir_fd=parent))
                done.append(name)
                continue
            if stat.S_ISLNK(st.st_mode):
                _refuse_magic_link(parent, name, path)
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many symlinks", path)
                target = os.readlink(name, dir_fd=parent)
                if target.startswith("/"):
                    done = []
                todo[:0] = [c for c in target.split("/") if c]
                continue
            done.append(name)
        finally:
            os.close(parent)
    return "/".join(done)


def _refuse_magic_link(parent: int, name: str, path: str) -> None:
    """/proc/self/fd/N and friends are not paths: following them could leave the root."""
    try:
        os.close(sc.openat2(parent, name, os.O_PATH, sc.RESOLVE_NO_MAGICLINKS))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "refusing to follow a /proc magic link", path) from None


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"
