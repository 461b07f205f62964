"""pyoci's OCI runtime-spec conformance suite (stdlib only).

The requirement catalogue comes from runtime-tools' specerror package (Debian's
golang-github-opencontainers-runtime-tools-dev); checks drive a runtime binary through
create/start/state/kill/delete with a private --root and inspect containers with a static
in-container probe (conformance/checker.c). Entry point: conformance/run.
"""
