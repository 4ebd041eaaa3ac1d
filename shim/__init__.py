"""The containerd shim v2 daemon and its bootstrap commands (start, delete, -v, -info)."""
