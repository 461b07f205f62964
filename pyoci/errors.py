"""One exception hierarchy; the CLI maps each to a one-line message and exit code 1.

The lifecycle commands import this module only when they raise (pyoci.state, pyoci/ops): a
successful `state` or `start` never loads it."""


class PyociError(Exception):
    """Base of every error pyoci reports to its caller (one line, exit code 1)."""

    exit_code = 1


class UsageError(PyociError):
    """Bad command line (unknown flag, missing argument)."""


class ConfigError(PyociError):
    """config.json is malformed, violates the schema, or asks for something impossible."""


class ContainerNotFound(PyociError):
    def __init__(self, cid: str):
        super().__init__(f"container does not exist: {cid}")


class ContainerExists(PyociError):
    def __init__(self, cid: str):
        super().__init__(f"container with id exists: {cid}")


class StateFileError(PyociError, ValueError):
    """A file in the state directory is unreadable or corrupt (a ValueError too: callers
    that can do without the file catch it as they catch a JSON error)."""


class StateError(PyociError):
    """The container is not in a state that allows the operation."""


class HookError(PyociError):
    """A hook failed or timed out."""


class SysError(PyociError):
    """A system call or kernel facility failed; errno, where the cause was one (a rootless
    create tells a denied cgroup write or mkdir apart by it)."""

    errno: int | None = None


class UnsupportedError(PyociError):
    """The config asks for a feature this host or pyoci cannot provide."""


def why(e: OSError) -> str:
    """The cause of an OSError in the words of strerror (its message when it has no errno)."""
    import os

    return os.strerror(e.errno) if e.errno else str(e)
