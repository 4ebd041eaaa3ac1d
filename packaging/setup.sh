#!/bin/bash
# Installs everything railcar needs on Debian 12 as root: the apt packages (containerd, runc, crun,
# busybox-static, criu, CNI plugins, libcap-dev for python-prctl, libseccomp) and a virtualenv at
# .venv with railcar installed in editable mode plus its test dependencies. Idempotent and quick
# when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(containerd runc crun busybox-static criu containernetworking-plugins
              libcap-dev libseccomp2 iproute2 util-linux gcc python3-dev python3-venv)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.railcar-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip setuptools wheel >&2
    .venv/bin/pip install -q -e '.[test]' >&2
    touch "$stamp"
fi
