"""pyoci: an OCI-compliant, runc-compatible low-level container runtime."""

__version__ = "0.1.0"
SPEC_VERSION = "1.3.0"

# False at run time, True for type checkers (mypy and pyright take any `TYPE_CHECKING` as true).
# Modules import it from here, `from pyoci import TYPE_CHECKING`, and put what only their
# annotations need (typing, socket...) under `if TYPE_CHECKING:`: `typing` costs milliseconds
# at import, and the hot commands (tests/test_imports.py) never import it.
TYPE_CHECKING = False
