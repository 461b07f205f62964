"""containerd-shim-pyoci-v2: pyoci as containerd's shim runtime `io.containerd.pyoci.v2`.

main.py      the command: `start`, `delete` and the long-lived shim (containerd's flags)
ttrpc.py     the ttrpc protocol: frames, the server, a client
pb.py        the protobuf messages (proto/shim.proto, compiled into descriptors.py)
service.py   the containerd.task.v2.Task service on top of the `pyoci` command
procio.py    the processes' stdio: containerd's fifos, log URIs, terminals
reaper.py    the subreaper: exit statuses of containers and of the commands the shim runs
events.py    task events through containerd's publish binary
"""
