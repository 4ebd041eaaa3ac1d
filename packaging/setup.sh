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
#
# For the same reason the shim's binary, .venv/bin/containerd-shim-railcar-v2, is replaced by a
# small sh launcher. It runs railcar with `python -I -S` (pip drops options from a script's #! line):
# site's work (the .pth files of the environment) costs ~5 ms of each run, and railcar needs only
# its own site-packages, which it adds itself. And a `delete` whose answer the daemon already
# recorded in the bundle (railcar.shim.cleanup.DELETED_FILE, after it removed everything itself,
# the common case) is answered by printing that file, without starting Python at all (~10 ms). And the virtualenv is made from Debian's /usr/bin/python3, which has
# libpython linked in: it starts ~2 ms faster than a shared-library build (pyenv's), and the sealed
# copy of the interpreter that railcar runs containers from (CVE-2019-5736) then holds libpython
# too. PYTHON=... picks another interpreter.
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

PY=${PYTHON:-/usr/bin/python3}
interpreter='import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))'
want=$("$PY" -c "$interpreter") || { echo "setup: cannot run $PY" >&2; exit 1; }
if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c "$interpreter" 2>/dev/null)" != "$want" ]; then
    echo "setup: .venv was made from another interpreter; making it again from $PY" >&2
    rm -rf .venv
fi
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
import shlex
import shutil
import sys
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

from railcar.shim.cleanup import DELETED_FILE

shim = os.path.join(sysconfig.get_paths()["scripts"], "containerd-shim-railcar-v2")
entry = f"import sys; sys.path.append({site!r}); from railcar.shim.__main__ import main; main()"
with open(shim + ".new", "w") as f:
    f.write(f"""#!/bin/sh
# Written by packaging/setup.sh (see there): containerd runs this for every container's start and
# delete. A delete the daemon already answered prints that answer; the rest is railcar's Python.
if [ "$#" -gt 0 ] && eval '[ "${{'"$#"'}}" = delete ]'; then
    bundle=$PWD
    prev=
    for arg in "$@"; do
        case $prev in -bundle|--bundle) bundle=$arg ;; esac
        case $arg in -bundle=*|--bundle=*) bundle=${{arg#*=}} ;; esac
        prev=$arg
    done
    if [ -f "$bundle/{DELETED_FILE}" ]; then
        exec {shlex.quote(shutil.which("cat") or "/bin/cat")} "$bundle/{DELETED_FILE}"
    fi
fi
exec {shlex.quote(sys.executable)} -I -S -c {shlex.quote(entry)} "$@"
""")
os.chmod(shim + ".new", 0o755)
os.replace(shim + ".new", shim)
EOF
