"""Rootfs layers from containerd (mount_layers / unmount_all) and option parsing."""

import os

import pytest

from railcar.runtime import RuntimeFailure
from railcar.runtime import syscalls as sc
from railcar.runtime.mounts import mount_layers, mount_points, parse_options, unmount_all, with_mount_label


def test_parse_options_splits_flags_propagation_and_data() -> None:
    opts = parse_options(["rbind", "ro", "nosuid", "rprivate", "size=1m", "mode=755"])
    assert opts.flags == sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY | sc.MS_NOSUID
    assert opts.propagation == (sc.MS_PRIVATE | sc.MS_REC,)
    assert opts.data == "size=1m,mode=755"
    assert parse_options(["ro", "rw"]).flags == 0
    with pytest.raises(RuntimeFailure, match="loop devices"):
        parse_options(["loop"])


def test_recursive_words_become_mount_setattr_attributes_the_last_word_winning() -> None:
    opts = parse_options(["rbind", "rro", "rnosuid", "rnoexec", "rexec", "rnoatime", "rstrictatime"])
    assert opts.flags == sc.MS_BIND | sc.MS_REC and opts.data == ""
    assert opts.recursive == (sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_STRICTATIME,
                              sc.MOUNT_ATTR_NOEXEC | sc.MOUNT_ATTR__ATIME)
    assert parse_options(["rro", "rrw"]).recursive == (0, sc.MOUNT_ATTR_RDONLY)
    for undo in ("ratime", "rnorelatime", "rnostrictatime"):   # back to the default, as runc reads them
        assert parse_options(["rnoatime", undo]).recursive == (sc.MOUNT_ATTR_RELATIME, sc.MOUNT_ATTR__ATIME)
    labelled = with_mount_label(parse_options(["rro", "size=1m"]), "tmpfs", "system_u:object_r:x:s0")
    assert labelled.recursive == (sc.MOUNT_ATTR_RDONLY, 0) and "context=" in labelled.data


def _under(path: str) -> list[str]:
    return [p for p in mount_points() if p == path or p.startswith(path + "/")]


def test_the_mount_label_goes_to_filesystems_the_container_mounts_not_to_binds() -> None:
    label = "system_u:object_r:container_file_t:s0:c1,c2"
    tmpfs = with_mount_label(parse_options(["nosuid", "mode=755"]), "tmpfs", label)
    assert tmpfs.data == f'mode=755,context="{label}"' and tmpfs.flags == sc.MS_NOSUID
    assert with_mount_label(parse_options([]), "devpts", label).data == f'context="{label}"'
    for kind, options in (("bind", ["rbind"]), ("proc", []), ("sysfs", []), ("mqueue", [])):
        opts = parse_options(options)
        assert with_mount_label(opts, kind, label) == opts
    assert with_mount_label(parse_options(["mode=755"]), "tmpfs", "") == parse_options(["mode=755"])


def test_overlay_and_readonly_bind_layers(tmp_path) -> None:
    lower1, lower2, upper, work, target = (tmp_path / n for n in
                                           ("l1", "l2", "up", "work", "rootfs"))
    for d in (lower1, lower2, upper, work, target):
        d.mkdir()
    (lower1 / "a").write_text("from l1")
    (lower2 / "b").write_text("from l2")
    mount_layers([{"type": "overlay", "source": "overlay",
                   "options": ["index=off", f"workdir={work}", f"upperdir={upper}",
                               f"lowerdir={lower1}:{lower2}"]}], str(target))
    try:
        assert sorted(os.listdir(target)) == ["a", "b"]
        (target / "c").write_text("new")
        assert (upper / "c").exists()
        bind_target = tmp_path / "bound"
        bind_target.mkdir()
        mount_layers([{"type": "bind", "source": str(lower1), "options": ["rbind", "ro"]}],
                     str(bind_target))
        with pytest.raises(OSError):
            (bind_target / "x").write_text("no")
        unmount_all(str(bind_target))
        assert _under(str(bind_target)) == []
    finally:
        unmount_all(str(target))
    assert _under(str(target)) == []
    unmount_all(str(target))   # nothing mounted: no error


def test_failed_layer_unmounts_what_was_mounted(tmp_path) -> None:
    src, target = tmp_path / "src", tmp_path / "rootfs"
    src.mkdir()
    target.mkdir()
    with pytest.raises(RuntimeFailure, match=r"rootfs\[1\]"):
        mount_layers([{"type": "bind", "source": str(src), "options": ["rbind"]},
                      {"type": "bind", "source": str(tmp_path / "missing"),
                       "options": ["rbind"]}], str(target))
    assert _under(str(target)) == []


def test_unmount_all_removes_stacked_and_nested_mounts(tmp_path) -> None:
    target = tmp_path / "stack"
    target.mkdir()
    sc.mount("tmpfs", str(target), "tmpfs", 0, None)
    sc.mount("tmpfs", str(target), "tmpfs", 0, None)
    (target / "sub").mkdir()
    sc.mount("tmpfs", str(target / "sub"), "tmpfs", 0, None)
    assert len(_under(str(target))) == 3
    unmount_all(str(target))
    assert _under(str(target)) == []


def test_overlay_options_longer_than_a_page_are_shortened(tmp_path) -> None:
    lowers = []
    for i in range(40):
        d = tmp_path / f"layer-{i:02d}-{'x' * 40}"
        d.mkdir()
        (d / f"f{i}").write_text(str(i))
        lowers.append(str(d))
    upper, work, target = tmp_path / "up", tmp_path / "work", tmp_path / "rootfs"
    for d in (upper, work, target):
        d.mkdir()
    options = [f"workdir={work}", f"upperdir={upper}", "lowerdir=" + ":".join(lowers)]
    assert len(",".join(options)) > os.sysconf("SC_PAGESIZE")
    mount_layers([{"type": "overlay", "source": "overlay", "options": options}], str(target))
    try:
        assert sorted(os.listdir(target)) == sorted(f"f{i}" for i in range(40))
    finally:
        unmount_all(str(target))
    assert _under(str(target)) == []


@pytest.mark.parametrize("options, key", [
    ("rw,xattr,name=systemd", "name=systemd"),  # as systemd mounts its own
    ("rw,cpu,cpuacct", "cpu,cpuacct"),
    ("rw,clone_children,cpuset", "cpuset"),
    ("ro,noprefix,cpu,name=mine", "cpu,name=mine"),
])
def test_a_hierarchy_is_known_by_its_controllers_and_name_only(options, key) -> None:
    from railcar.runtime.rootfs import hierarchy_key

    assert hierarchy_key(options, {"cpu", "cpuacct", "cpuset", "memory"}) == key
