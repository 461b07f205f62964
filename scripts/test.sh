#!/usr/bin/env bash
# Set everything up and run the whole test suite (as root: the tests run real containers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
