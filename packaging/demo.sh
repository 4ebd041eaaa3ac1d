#!/bin/bash
# The main job: install, start a private containerd under .work/demo (its own root, state and
# sockets; the machine's containerd is never touched) with railcar's shim on its PATH, build and
# import a busybox image from busybox-static, and run a container through
# `ctr run --runtime io.containerd.railcar.v2`, printing its output. containerd is stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup.sh
rm -rf .work/demo
exec .venv/bin/python packaging/devenv.py demo .work/demo
