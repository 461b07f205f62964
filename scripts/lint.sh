#!/usr/bin/env bash
# The linter and the type checker, with their configuration in pyproject.toml: ruff over the
# whole tree (pycodestyle, pyflakes, bugbear, pyupgrade) and mypy over pyoci/ and the tests'
# shared helpers (tests/support). Exits non-zero on any finding. scripts/test.sh runs it
# before the tests; run it alone after scripts/setup.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
echo "lint: ruff check" >&2
.venv/bin/ruff check --no-cache . || rc=1
echo "lint: mypy" >&2
.venv/bin/mypy || rc=1
exit $rc
