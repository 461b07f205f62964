"""The runtime's operations, one module per command (as youki's container_start.rs,
container_kill.rs...): each has run(...) -> exit code, called by pyoci.cli with the parsed
flags, and the functions other code calls (state_json, start, kill, delete...).

- state.py, start.py, kill.py, delete.py, pause.py (pause and resume), list.py: the
  lifecycle, on built-in modules only for the common case (pyoci.state);
- update.py, events.py, ps.py: through the container's cgroup, with runc 1.1's flags,
  outputs, exit codes and error messages;
- create.py, run.py, exec.py: starting processes.

Importing this package costs nothing: only the module of the command being run is loaded.
"""
