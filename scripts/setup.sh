#!/usr/bin/env bash
# Set up everything pyoci needs on a Debian (bookworm) machine, as root, idempotently:
# the system packages in scripts/apt-packages.txt, and a virtualenv at .venv/ with pyoci
# installed in it (editable) plus its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=$(grep -v '^\s*#' scripts/apt-packages.txt | grep -v '^\s*$' | tr '\n' ' ')
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends $missing
fi

# Packages from backports (scripts/apt-backports.txt): Go 1.23 for the upstream runtime-tools
# suite. The backports source is derived at run time from the machine's own Debian source.
bpkgs=$(grep -v '^\s*#' scripts/apt-backports.txt | grep -v '^\s*$' | tr '\n' ' ')
bmissing=""
for p in $bpkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || bmissing="$bmissing $p"
done
if [ -n "$bmissing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    code=$(. /etc/os-release && echo "$VERSION_CODENAME")
    scripts/backports.py
    apt-get -o DPkg::Lock::Timeout=600 update
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
        -t "$code-backports" $bmissing
fi

# The interpreter: Debian's python3 (python3-venv, python3-dev above) unless PYOCI_PYTHON
# names another. Debian links libpython statically into /usr/bin/python3.11: no shared-library
# relocation at start-up, and faster bytecode than a --enable-shared build (measured here:
# -IS start-up 5.4 vs 5.9 ms, an import-heavy start 11% faster) -- pyoci starts an
# interpreter for every command.
py=${PYOCI_PYTHON:-/usr/bin/python3}
if ! "$py" -c 'import sys, venv; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    py=$(command -v python3.11)
fi
want=$("$py" -c 'import os, sys; print(os.path.realpath(sys.executable))')
if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c 'import os, sys; print(os.path.realpath(sys.executable))')" != "$want" ]; then
    rm -rf .venv                  # made with another interpreter: start again
fi
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
# pyoci itself, editable, by setup.py's build steps, as `pip install .` would (no second
# way): the commands .venv/bin/pyoci and .venv/bin/containerd-shim-pyoci-v2 (a static
# launcher that starts `python -IS` on NAME-script.py beside it) and the waiter
# pyoci/linux/pyoci-waiter (built in place; without a C compiler the created container's init
# waits in Python). Again whenever those steps or the programs' sources change.
stamp=.venv/.pyoci-installed
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml setup.py pyoci/linux/waiter.c \
        pyoci/linux/trampoline.c pyoci/linux/nolibc.h -newer "$stamp" 2>/dev/null)" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
# Byte-compile pyoci and the venv's packages ahead of time: every invocation would
# otherwise compile its modules again where PYTHONDONTWRITEBYTECODE is set.
.venv/bin/python -m compileall -q pyoci >/dev/null
.venv/bin/python -m compileall -q "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
