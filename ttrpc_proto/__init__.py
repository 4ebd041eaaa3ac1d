"""ttrpc for Python: a sans-IO protocol core, trio adapters and the containerd API types."""
