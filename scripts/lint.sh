#!/usr/bin/env bash
# The linter over the whole tree, with the configuration in pyproject.toml: ruff (pycodestyle,
# pyflakes, bugbear, pyupgrade). Exits non-zero on any finding. scripts/test.sh runs it before
# the tests; run it alone after scripts/setup.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
echo "lint: ruff check" >&2
.venv/bin/ruff check --no-cache . || rc=1
exit $rc
