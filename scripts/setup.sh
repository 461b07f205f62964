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
stamp=.venv/.pyoci-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
# Byte-compile pyoci and the venv's packages ahead of time: every invocation would
# otherwise compile its modules again where PYTHONDONTWRITEBYTECODE is set.
.venv/bin/python -m compileall -q pyoci >/dev/null
.venv/bin/python -m compileall -q "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
# The waiter (pyoci/linux/waiter.c): a small static program without libc that the container's
# init executes while it waits for `start` (pyoci/linux/waiter.py). Where it cannot be built
# (no C compiler, another architecture) pyoci keeps waiting in the Python init.
waiter=pyoci/linux/pyoci-waiter
if [ ! -x "$waiter" ] || [ pyoci/linux/waiter.c -nt "$waiter" ] ||
    [ scripts/setup.sh -nt "$waiter" ]; then
    if "${CC:-cc}" -Os -static -nostdlib -nostartfiles -ffreestanding -fno-builtin \
        -fno-stack-protector -fno-pie -no-pie -fno-asynchronous-unwind-tables \
        -fno-unwind-tables -ffunction-sections -fdata-sections -Wall -Wextra -Werror \
        -Wl,--gc-sections -Wl,-z,noexecstack -Wl,--build-id=none -s \
        -o "$waiter.tmp" pyoci/linux/waiter.c; then
        mv -f "$waiter.tmp" "$waiter"
    else
        rm -f "$waiter.tmp" "$waiter"
        echo "setup: pyoci-waiter not built: the created container's init waits in Python" >&2
    fi
fi
# .venv/bin/pyoci: a launcher that starts the interpreter isolated and without `site` (-IS:
# no .pth files, no editable-install finder, no PYTHON* variables) and puts the repository
# and the venv's packages on sys.path itself; pyoci.fastpath serves state/start/kill/delete
# on built-in modules only and hands everything else to pyoci.cli.
.venv/bin/python - <<'PY'
import os, sys, sysconfig

repo, venv = os.getcwd(), os.path.abspath(".venv")
text = (f"#!{venv}/bin/python -IS\n"
        "import sys\n"
        f"sys.path.insert(0, {repo!r})\n"
        f"sys.path.append({sysconfig.get_paths()['purelib']!r})\n"
        "from pyoci.fastpath import launch\n"
        "launch()\n")
path = os.path.join(venv, "bin", "pyoci")
with open(path + ".tmp", "w") as f:
    f.write(text)
os.chmod(path + ".tmp", 0o755)
os.replace(path + ".tmp", path)
# containerd-shim-pyoci-v2 (pyoci/shim) the same way: containerd runs it on every start
shim = text.replace("from pyoci.fastpath import launch\nlaunch()\n",
                    "from pyoci.shim.main import main\nsys.exit(main())\n")
path = os.path.join(venv, "bin", "containerd-shim-pyoci-v2")
with open(path + ".tmp", "w") as f:
    f.write(shim)
os.chmod(path + ".tmp", 0o755)
os.replace(path + ".tmp", path)
PY
