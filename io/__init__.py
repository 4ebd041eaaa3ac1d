"""Stdio forwarding: pipes, FIFOs, binary:// and file:// targets, ptys. Knows nothing of containers."""
