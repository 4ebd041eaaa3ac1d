#!/bin/bash
# Installs everything railcar needs on Debian 12 as root: the apt packages (containerd, runc, crun,
# busybox-static, criu, CNI plugins, libcap-dev for python-prctl, libseccomp) and a virtualenv at
# .venv with railcar installed in editable mode plus its test dependencies. Idempotent and quick
# when everything is already there.
#
# The editable install is then made lighter: pip (setuptools) maps railcar.* onto the top-level
# folders with an import hook that costs ~20 ms of every Python start (it imports pathlib and
# importlib.util), which the shim pays twice per container (`start` and `delete`). Directory
# symlinks site-packages/railcar/<pkg> -> ./<pkg> give the same mapping for free and, unlike
# setuptools' strict mode (one link per file), see new modules without a reinstall. (Its compat
# mode cannot express this layout: it would put the checkout itself on sys.path.)
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

.venv/bin/python - <<'EOF'
import glob
import os
import sysconfig
import tomllib

site = sysconfig.get_paths()["purelib"]
with open("pyproject.toml", "rb") as f:
    package_dirs = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
for package, folder in package_dirs.items():
    link, target = os.path.join(site, *package.split(".")), os.path.abspath(folder)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.islink(link) and os.readlink(link) == target:
        continue
    os.symlink(target, link + ".new")
    os.replace(link + ".new", link)  # atomic: a concurrent import sees the old or the new link
for hook in glob.glob(os.path.join(site, "__editable__*railcar*")):
    os.unlink(hook)
EOF
