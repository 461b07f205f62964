"""`exec`'s children (pyoci.ops.exec forks them): the *joiner* enters the container and forks
the *process*, which sets itself up and executes the program.

* the joiner makes itself non-dumpable, is put into the container's cgroup by the runtime,
  joins the namespaces (user first, mount last) and forks the process, the first one to be
  inside the container's PID namespace; it reports its pid and exits, so the process is
  reparented to the runtime (a subreaper) or, once the runtime exits, to the runtime's own
  subreaper;
* the process waits for the runtime's go and ends with pyoci.linux.process.execute, the
  routine the container's init ends with too. It stays non-dumpable until the execve, so
  nothing in the container can open /proc/PID/exe (the host's interpreter) or ptrace it.

They talk to the runtime over pyoci.linux.channel. Nothing here may import a module after
the setns of the mount namespace (it would resolve in the container's root): the runtime
preloaded them (pyoci.linux.process.preload).
"""

from __future__ import annotations

import os

from pyoci import TYPE_CHECKING
from pyoci.errors import StateError
from pyoci.linux import channel as ch
from pyoci.linux import child
from pyoci.linux import namespaces as nsmod
from pyoci.linux import process as procmod
from pyoci.linux import syscalls as sc
from pyoci.record import dataclass, field

if TYPE_CHECKING:
    from pyoci.spec.config import Personality, Process


@dataclass
class JoinJob:
    """What the children need, prepared by the runtime before the fork."""

    process: Process                         # the runtime-spec process to execute
    chan: ch.Channel                         # the children's end of the channel
    personality: Personality | None = None   # the container's linux.personality
    ns: list[tuple[str, int]] = field(default_factory=list)   # namespaces to join, in order
    root_fd: int = -1                        # no mount namespace: the init's root (chroot)
    console_fd: int = -1                     # where the pty's master goes
    preserve: int = 0                        # fds 3..3+preserve-1 pass to the program
    seccomp: tuple[bytes, int] | None = None  # the built filter
    notify: bool = False                     # the filter's notify fd goes to the runtime
    rootless: bool = False                   # started by a user other than root


def joiner(job: JoinJob) -> None:
    """Join the container and fork the process; never returns."""
    try:
        # Nothing in the container may ptrace us or open /proc/PID/exe (the host's
        # interpreter): non-dumpable before any setns, until the program's execve.
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        child.default_signals()
        keep = {job.chan.fileno(), job.console_fd, job.root_fd}
        keep.update(fd for _, fd in job.ns)
        child.close_fds_except(keep, job.preserve)   # the runtime's state files, its strays
        procmod.exec_cpu_affinity(job.process, "initial")     # before the cgroup
        job.chan.send(ch.Join())
        job.chan.expect(ch.Ok)      # the runtime has put us in the container's cgroup
        nsmod.join(job.ns, only=("user",))
        if any(t == "user" for t, _ in job.ns):
            child.become_root("exec")
        nsmod.join([(t, fd) for t, fd in job.ns if t != "user"])   # mount last
        if job.root_fd >= 0:        # no mount namespace: the init's chroot
            os.fchdir(job.root_fd)
            os.chroot(".")
            os.close(job.root_fd)
        try:
            pid = os.fork()         # the pid and time namespaces apply to children
        except OSError as e:
            if e.errno == 12:       # ENOMEM: the PID namespace's init has exited (a race)
                raise StateError("exec: the container's init exited (its PID namespace "
                                 "takes no new process)") from None
            raise
        if pid == 0:
            _process(job)           # never returns
        job.chan.send(ch.Pid(pid))
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - reported to the runtime
        job.chan.fail(e)


def _process(job: JoinJob) -> None:
    """Set up the process and execute the program; never returns."""
    try:
        job.chan.expect(ch.Go)      # the runtime knows our pid
        os.setsid()
        launch = procmod.Launch(
            process=job.process, chan=job.chan, personality=job.personality,
            console_fd=job.console_fd, preserve=job.preserve, seccomp=job.seccomp,
            notify=(lambda fd: _notify(job.chan, fd)) if job.notify else None,
            rootless=job.rootless)
        procmod.execute(launch)
    except BaseException as e:  # noqa: BLE001 - reported to the runtime
        job.chan.fail(e)


def _notify(chan: ch.Channel, fd: int) -> None:
    """The filter's notify fd to the runtime, which passes it on to the seccomp agent."""
    chan.send(ch.Notify(), [fd])
    chan.expect(ch.Ok)

