#!/usr/bin/env bash
# Set everything up, build a busybox bundle offline and run "my first container" with pyoci.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
work=$(mktemp -d /tmp/pyoci-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
.venv/bin/python tests/support/rootfs.py "$work/bundle" \
    sh -c 'echo "Hello from my first container: $(hostname), pid $$, running as $(id -un)"' >/dev/null
cd "$work/bundle"
"$OLDPWD/.venv/bin/pyoci" --root "$work/state" run demo
