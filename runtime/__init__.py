"""railcar's OCI runtime: namespaces, rootfs, process, lifecycle, cgroups and security."""
