"""The mount table parser every reader of /proc/self/mountinfo goes through."""

from railcar.runtime.mountinfo import MountEntry, parse, read

TABLE = (
    "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n"
    "35 22 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 master:2 - cgroup cgroup rw,cpu,cpuacct\n"
    "41 22 0:44 /sub\\040dir /tmp/with\\040space\\011tab\\134slash rw - tmpfs my\\040src rw,size=4k\n"
    "42 22 0:45 / /proc/x rw - proc proc\n"
)


def test_fields_come_apart_with_paths_unescaped() -> None:
    root, cpu, spaced, bare = parse(TABLE)
    assert root == MountEntry("/", "/", ("shared:1",), "ext4", "/dev/vda1", "rw,errors=remount-ro", 22)
    assert cpu.optional == ("shared:9", "master:2") and cpu.super_options == "rw,cpu,cpuacct"
    assert (spaced.root, spaced.point, spaced.source) == ("/sub dir", "/tmp/with space\ttab\\slash", "my src")
    assert spaced.optional == ()
    assert bare.super_options == ""


def test_only_the_kernel_s_separators_separate() -> None:
    """A path may hold whitespace the kernel does not escape (no-break space, form feed, U+2028...);
    a source may be empty."""
    odd = "/mnt/a\u00a0b\x0cc\u2028d\re"
    [entry] = parse(f"50 22 0:46 / {odd} rw shared:3 - tmpfs  rw\n")
    assert (entry.point, entry.optional, entry.fstype, entry.source, entry.super_options) == \
        (odd, ("shared:3",), "tmpfs", "", "rw")


def test_this_namespace_has_a_root_mount() -> None:
    assert any(m.point == "/" for m in read())
