"""The containerd.task.v2.Task service: containerd's calls on the shim, carried out through
the `pyoci` command as containerd's runc shim calls runc (`--root`, `--log <bundle>/log.json
--log-format json`; a failing command's last logged error becomes the call's error).

One shim serves one container, or every container of a pod (grouped by the CRI sandbox id).
Each container has its init process and its exec processes; the reaper reports their exits,
which complete Wait calls and are published as TaskExit events.
"""

from __future__ import annotations

import os
import threading

from pyoci import jsonio

from pyoci.shim import pb, stats
from pyoci.shim.procio import ProcessIO
from pyoci.shim.ttrpc import (ALREADY_EXISTS, FAILED_PRECONDITION, INVALID_ARGUMENT,
                              NOT_FOUND, UNIMPLEMENTED, UNKNOWN, TtrpcError)

SERVICE = "containerd.task.v2.Task"
RUNTIME_NAME = "io.containerd.pyoci.v2"
PROCESS_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"
OUTPUT_DRAIN_SECONDS = 5.0   # Delete waits this long for the output copies to end


class Process:
    def __init__(self, container: Container, exec_id: str, req):
        self.container = container
        self.exec_id = exec_id
        self.stdin, self.stdout, self.stderr = req.stdin, req.stdout, req.stderr
        self.terminal = req.terminal
        self.pid = 0
        self.status = pb.CREATED
        self.exit_status = 0
        self.exited_at: float | None = None
        self.exited = threading.Event()
        self.io: ProcessIO | None = None
        self.spec = ""               # an exec's process JSON

    def state(self):
        return pb.StateResponse(
            id=self.container.id, bundle=self.container.bundle, pid=self.pid,
            status=self.status, stdin=self.stdin, stdout=self.stdout, stderr=self.stderr,
            terminal=self.terminal, exit_status=self.exit_status,
            exited_at=pb.timestamp(self.exited_at), exec_id=self.exec_id)


class Container:
    def __init__(self, cid: str, bundle: str):
        self.id = cid
        self.bundle = bundle
        self.lock = threading.RLock()     # orders Start/exit/Delete and their events
        self.init: Process | None = None
        self.execs: dict[str, Process] = {}
        self.rootfs_mounted = False
        self.oom_watch: threading.Thread | None = None

    def process(self, exec_id: str) -> Process:
        if not exec_id:
            if self.init is None:     # its create has not finished, or failed
                raise TtrpcError(NOT_FOUND, f"container {self.id}: not found")
            return self.init
        p = self.execs.get(exec_id)
        if p is None:
            raise TtrpcError(NOT_FOUND, f"process {exec_id} does not exist {self.id}: not found")
        return p


class Service:
    def __init__(self, namespace: str, pyoci: str, reaper, publisher, log, on_shutdown):
        self.namespace = namespace
        self.pyoci = pyoci
        self.root = os.path.join("/run/containerd/pyoci", namespace)
        self.reaper = reaper
        self.publisher = publisher
        self.log = log
        self.on_shutdown = on_shutdown
        self.lock = threading.Lock()
        self.containers: dict[str, Container] = {}

    def methods(self) -> dict:
        table = {
            "State": (pb.StateRequest, self.state),
            "Create": (pb.CreateTaskRequest, self.create),
            "Start": (pb.StartRequest, self.start),
            "Delete": (pb.DeleteRequest, self.delete),
            "Pids": (pb.PidsRequest, self.pids),
            "Pause": (pb.PauseRequest, self.pause),
            "Resume": (pb.ResumeRequest, self.resume),
            "Kill": (pb.KillRequest, self.kill),
            "Exec": (pb.ExecProcessRequest, self.exec),
            "ResizePty": (pb.ResizePtyRequest, self.resize_pty),
            "CloseIO": (pb.CloseIORequest, self.close_io),
            "Update": (pb.UpdateTaskRequest, self.update),
            "Wait": (pb.WaitRequest, self.wait),
            "Stats": (pb.StatsRequest, self.stats),
            "Connect": (pb.ConnectRequest, self.connect),
            "Shutdown": (pb.ShutdownRequest, self.shutdown),
            "Checkpoint": (pb.CheckpointTaskRequest, self.checkpoint),
        }
        return {(SERVICE, m): v for m, v in table.items()}

    # --- helpers ---------------------------------------------------------------------

    def _container(self, cid: str) -> Container:
        with self.lock:
            c = self.containers.get(cid)
        if c is None:
            raise TtrpcError(NOT_FOUND, f"container {cid}: not found")
        return c

    def _argv(self, c: Container, *args: str) -> list[str]:
        return [self.pyoci, "--root", self.root, "--log", os.path.join(c.bundle, "log.json"),
                "--log-format", "json", *args]

    def _pyoci(self, c: Container, *args: str, input: bytes | None = None,
               stdio: list[int] | None = None) -> bytes:
        """Run a pyoci command; a failure raises TtrpcError with its error message."""
        log = os.path.join(c.bundle, "log.json")
        try:
            start = os.path.getsize(log)
        except OSError:
            start = 0
        code, out, err = self.reaper.run(self._argv(c, *args), input=input, stdio=stdio)
        if code != 0:
            msg = _last_error(log, start) or err.decode(errors="replace").strip() or \
                f"exit status {code}"
            raise TtrpcError(_code_for(msg), f"pyoci {args[0]}: {msg}")
        return out

    def _on_exit(self, p: Process, code: int, when: float) -> None:
        # on the reaper thread: hand over (the container lock may be held by a call that
        # waits for a command the reaper must collect)
        threading.Thread(target=self._exited, args=(p, code, when), daemon=True).start()

    def _exited(self, p: Process, code: int, when: float) -> None:
        c = p.container
        with c.lock:
            p.exit_status = code
            p.exited_at = when
            p.status = pb.STOPPED
            p.exited.set()
            if p.io is not None:
                p.io.close_io()
                p.io.close_stdin()
            self.publisher.publish("/tasks/exit", "containerd.events.TaskExit", pb.TaskExit(
                container_id=c.id, id=p.exec_id or c.id, pid=p.pid, exit_status=code,
                exited_at=pb.timestamp(when)))

    def _mount_rootfs(self, c: Container, mounts) -> None:
        if not mounts:
            return
        from pyoci.linux import mounts as mnt_mod
        from pyoci.linux import syscalls as sc

        target = os.path.join(c.bundle, "rootfs")
        os.makedirs(target, exist_ok=True)
        for i, m in enumerate(mounts):
            try:
                parsed = mnt_mod.parse_mount({"destination": "/", "type": m.type,
                                              "source": m.source, "options": list(m.options)},
                                             i)
                if parsed.bind:
                    sc.mount(m.source, target, None, parsed.flags & (sc.MS_BIND | sc.MS_REC))
                    if parsed.flags & sc.MS_RDONLY:
                        sc.mount(None, target, None,
                                 sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
                else:
                    sc.mount(m.source, target, m.type, parsed.flags, parsed.data or None)
            except Exception as e:  # noqa: BLE001 - ConfigError, OSError
                self._unmount_rootfs(c.bundle)
                raise TtrpcError(INVALID_ARGUMENT, f"rootfs mount {m.type} {m.source}: {e}") \
                    from None
            c.rootfs_mounted = True

    @staticmethod
    def _unmount_rootfs(bundle: str) -> None:
        unmount_rootfs(bundle)

    # --- the calls -----------------------------------------------------------------

    def create(self, req):
        bundle = req.bundle or os.getcwd()
        with self.lock:
            if req.id in self.containers:
                raise TtrpcError(ALREADY_EXISTS, f"container {req.id}: already exists")
            c = Container(req.id, bundle)
            self.containers[req.id] = c
        try:
            with c.lock:
                return self._create(c, req)
        except BaseException:
            with self.lock:
                self.containers.pop(req.id, None)
            raise

    def _create(self, c: Container, req):
        if req.checkpoint:
            raise TtrpcError(UNIMPLEMENTED, f"create {c.id} from checkpoint {req.checkpoint}: "
                                            "containerd-shim-pyoci-v2 does not restore "
                                            "checkpoints")
        self._mount_rootfs(c, req.rootfs)
        p = Process(c, "", req)
        p.io = io = ProcessIO(c.id, self.namespace, req.stdin, req.stdout, req.stderr,
                              req.terminal, self.reaper)
        pidfile = os.path.join(c.bundle, "init.pid")
        try:
            self._launch(c, p, io, ["create", "--bundle", c.bundle, "--pid-file", pidfile],
                         pidfile)
        except BaseException as e:
            io.failed()
            if not isinstance(e, TtrpcError):
                self.reaper.run(self._argv(c, "delete", "--force", c.id))
            if c.rootfs_mounted:
                self._unmount_rootfs(c.bundle)
            if isinstance(e, OSError):
                raise TtrpcError(UNKNOWN, f"create {c.id}: {e}") from None
            raise
        c.init = p
        self.reaper.watch(p.pid, lambda code, when: self._on_exit(p, code, when))
        self.publisher.publish("/tasks/create", "containerd.events.TaskCreate", pb.TaskCreate(
            container_id=c.id, bundle=c.bundle, rootfs=list(req.rootfs),
            io=pb.TaskIO(stdin=req.stdin, stdout=req.stdout, stderr=req.stderr,
                         terminal=req.terminal), checkpoint=req.checkpoint, pid=p.pid))
        return pb.CreateTaskResponse(pid=p.pid)

    def start(self, req):
        c = self._container(req.id)
        with c.lock:
            p = c.process(req.exec_id)
            if p.status != pb.CREATED:
                raise TtrpcError(FAILED_PRECONDITION,
                                 f"process {req.exec_id or req.id}: cannot start a "
                                 f"{_status_name(p.status)} process")
            if not req.exec_id:
                self._pyoci(c, "start", c.id)
                if p.status == pb.CREATED:
                    p.status = pb.RUNNING
                self.publisher.publish("/tasks/start", "containerd.events.TaskStart",
                                       pb.TaskStart(container_id=c.id, pid=p.pid))
                self._watch_oom(c)
            else:
                self._start_exec(c, p)
                self.publisher.publish("/tasks/exec-started", "containerd.events.TaskExecStarted",
                                       pb.TaskExecStarted(container_id=c.id,
                                                          exec_id=p.exec_id, pid=p.pid))
            return pb.StartResponse(pid=p.pid)

    def _launch(self, c: Container, p: Process, io: ProcessIO, args: list[str],
                pidfile: str) -> None:
        """Run the pyoci command that starts p (create, exec --detach) on its stdio io (and
        terminal), then take p's pid from pidfile."""
        io.prepare()
        if io.console_socket:
            args += ["--console-socket", io.console_socket]
        self._pyoci(c, *args, c.id, stdio=io.child_fds)
        io.started()
        with open(pidfile) as f:
            p.pid = int(f.read().strip())

    def _start_exec(self, c: Container, p: Process) -> None:
        spec_file = os.path.join(c.bundle, f".exec-{os.urandom(6).hex()}.json")
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(p.spec)
        pidfile = spec_file[:-5] + ".pid"
        p.io = io = ProcessIO(c.id, self.namespace, p.stdin, p.stdout, p.stderr, p.terminal,
                              self.reaper)
        try:
            self._launch(c, p, io, ["exec", "--process", spec_file, "--detach", "--pid-file",
                                    pidfile], pidfile)
        except OSError as e:
            io.failed()
            raise TtrpcError(UNKNOWN, f"exec {p.exec_id}: {e}") from None
        except BaseException:
            io.failed()
            raise
        finally:
            for path in (spec_file, pidfile):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        p.status = pb.RUNNING
        self.reaper.watch(p.pid, lambda code, when: self._on_exit(p, code, when))

    def exec(self, req):
        c = self._container(req.id)
        with c.lock:
            if req.exec_id in c.execs:
                raise TtrpcError(ALREADY_EXISTS, f"id {req.exec_id}: already exists")
            if c.init is None or c.init.status == pb.STOPPED:
                raise TtrpcError(FAILED_PRECONDITION, f"container {c.id} is not running")
            p = Process(c, req.exec_id, req)
            spec = req.spec.value.decode() if req.spec.value else ""
            try:
                jsonio.loads(spec)
            except ValueError as e:
                raise TtrpcError(INVALID_ARGUMENT, f"exec {req.exec_id}: the process spec "
                                                   f"is not JSON: {e}") from None
            p.spec = spec
            c.execs[req.exec_id] = p
            self.publisher.publish("/tasks/exec-added", "containerd.events.TaskExecAdded",
                                   pb.TaskExecAdded(container_id=c.id, exec_id=req.exec_id))
        return pb.Empty()

    def state(self, req):
        c = self._container(req.id)
        return c.process(req.exec_id).state()

    def wait(self, req):
        c = self._container(req.id)
        p = c.process(req.exec_id)
        p.exited.wait()
        return pb.WaitResponse(exit_status=p.exit_status, exited_at=pb.timestamp(p.exited_at))

    def kill(self, req):
        c = self._container(req.id)
        p = c.process(req.exec_id)
        if req.exec_id:
            if p.status != pb.RUNNING or p.exited.is_set():
                raise TtrpcError(NOT_FOUND, "process already finished: not found")
            try:
                os.kill(p.pid, req.signal)
            except ProcessLookupError:
                raise TtrpcError(NOT_FOUND, "process already finished: not found") from None
            return pb.Empty()
        if p.exited.is_set() and not req.all:
            raise TtrpcError(NOT_FOUND, "process already finished: not found")
        args = ["kill"] + (["--all"] if req.all else []) + [c.id, str(req.signal)]
        try:
            self._pyoci(c, *args)
        except TtrpcError as e:
            if p.exited.is_set() or e.code == NOT_FOUND:
                raise TtrpcError(NOT_FOUND, "process already finished: not found") from None
            raise
        return pb.Empty()

    def delete(self, req):
        c = self._container(req.id)
        with c.lock:
            p = c.process(req.exec_id)
            if req.exec_id:
                if p.status == pb.RUNNING and not p.exited.is_set():
                    raise TtrpcError(FAILED_PRECONDITION,
                                     f"cannot delete a running process {req.exec_id}")
                del c.execs[req.exec_id]
                if p.io is not None:
                    p.io.wait_output(OUTPUT_DRAIN_SECONDS)
                    p.io.close()
                return pb.DeleteResponse(pid=p.pid, exit_status=p.exit_status,
                                         exited_at=pb.timestamp(p.exited_at))
            if p.status != pb.STOPPED and p.status != pb.CREATED:
                raise TtrpcError(FAILED_PRECONDITION,
                                 f"cannot delete container {c.id}: it is "
                                 f"{_status_name(p.status)}")
            force = p.status == pb.CREATED
            try:
                self._pyoci(c, "delete", *(["--force"] if force else []), c.id)
            except TtrpcError as e:
                if e.code != NOT_FOUND:
                    raise
            if force and not p.exited.is_set():
                p.exited.wait(10)
            if p.io is not None:
                p.io.wait_output(OUTPUT_DRAIN_SECONDS)
                p.io.close()
            for ex in c.execs.values():
                if ex.io is not None:
                    ex.io.close()
            if c.rootfs_mounted:
                self._unmount_rootfs(c.bundle)
            with self.lock:
                self.containers.pop(c.id, None)
            self.publisher.publish("/tasks/delete", "containerd.events.TaskDelete",
                                   pb.TaskDelete(container_id=c.id, pid=p.pid,
                                                 exit_status=p.exit_status,
                                                 exited_at=pb.timestamp(p.exited_at)))
            return pb.DeleteResponse(pid=p.pid, exit_status=p.exit_status,
                                     exited_at=pb.timestamp(p.exited_at))

    def pids(self, req):
        c = self._container(req.id)
        out = self._pyoci(c, "ps", "--format", "json", c.id)
        pids = jsonio.loads(out or b"null") or []
        return pb.PidsResponse(processes=[pb.ProcessInfo(pid=pid) for pid in pids])

    def pause(self, req):
        c = self._container(req.id)
        with c.lock:
            init = c.process("")
            self._pyoci(c, "pause", c.id)
            init.status = pb.PAUSED
            self.publisher.publish("/tasks/paused", "containerd.events.TaskPaused",
                                   pb.TaskPaused(container_id=c.id))
        return pb.Empty()

    def resume(self, req):
        c = self._container(req.id)
        with c.lock:
            init = c.process("")
            self._pyoci(c, "resume", c.id)
            if init.status == pb.PAUSED:
                init.status = pb.RUNNING
            self.publisher.publish("/tasks/resumed", "containerd.events.TaskResumed",
                                   pb.TaskResumed(container_id=c.id))
        return pb.Empty()

    def update(self, req):
        c = self._container(req.id)
        data = req.resources.value or b"{}"
        try:
            jsonio.loads(data)
        except ValueError as e:
            raise TtrpcError(INVALID_ARGUMENT, f"update {c.id}: the resources are not JSON "
                                               f"({req.resources.type_url}): {e}") from None
        self._pyoci(c, "update", "--resources", "-", c.id, input=data)
        return pb.Empty()

    def checkpoint(self, req):
        """`pyoci checkpoint` (CRIU) into req.path, leaving the container running unless the
        options (the runc shim's CheckpointOptions) say exit."""
        c = self._container(req.id)
        opts = pb.CheckpointOptions()
        if req.options.value:
            try:
                opts = pb.CheckpointOptions.FromString(req.options.value)
            except Exception as e:  # noqa: BLE001 - protobuf's DecodeError
                raise TtrpcError(INVALID_ARGUMENT, f"checkpoint {c.id}: options "
                                                   f"{req.options.type_url}: {e}") from None
        args = ["checkpoint", "--image-path", opts.image_path or req.path]
        if opts.work_path:
            args += ["--work-path", opts.work_path]
        if not opts.exit:
            args.append("--leave-running")
        for flag, on in (("--tcp-established", opts.open_tcp),
                         ("--ext-unix-sk", opts.external_unix_sockets),
                         ("--shell-job", opts.terminal), ("--file-locks", opts.file_locks)):
            if on:
                args.append(flag)
        for ns in opts.empty_namespaces:
            args += ["--empty-ns", ns]
        if opts.cgroups_mode:
            args += ["--manage-cgroups-mode", opts.cgroups_mode]
        self._pyoci(c, *args, c.id)
        self.publisher.publish("/tasks/checkpointed", "containerd.events.TaskCheckpointed",
                               pb.TaskCheckpointed(container_id=c.id,
                                                   checkpoint=opts.image_path or req.path))
        return pb.Empty()

    def stats(self, req):
        c = self._container(req.id)
        out = self._pyoci(c, "events", "--stats", c.id)
        try:
            data = jsonio.loads(out)["data"]
        except (ValueError, KeyError) as e:
            raise TtrpcError(UNKNOWN, f"stats {c.id}: unreadable pyoci events output: {e}") \
                from None
        return pb.StatsResponse(stats=stats.metrics_any(data))

    def resize_pty(self, req):
        c = self._container(req.id)
        p = c.process(req.exec_id)
        if p.io is None:
            raise TtrpcError(FAILED_PRECONDITION, f"process {req.exec_id or req.id} has no io")
        try:
            p.io.resize(req.width, req.height)
        except OSError as e:
            raise TtrpcError(FAILED_PRECONDITION, f"resize pty: {e.strerror or e}") from None
        return pb.Empty()

    def close_io(self, req):
        c = self._container(req.id)
        p = c.process(req.exec_id)
        if req.stdin and p.io is not None:
            p.io.close_io()
        return pb.Empty()

    def connect(self, req):
        with self.lock:
            c = self.containers.get(req.id)
        pid = c.init.pid if c is not None and c.init is not None else 0
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=pid, version=RUNTIME_NAME)

    def shutdown(self, req):
        with self.lock:
            if self.containers and not req.now:
                return pb.Empty()
        self.on_shutdown()
        return pb.Empty()

    # --- OOM ---------------------------------------------------------------------------

    def _watch_oom(self, c: Container) -> None:
        """TaskOOM events: from the v1 memory cgroup's eventfd (memory.oom_control), or on
        a cgroup2 host from memory.events (oom_kill going up; the file signals POLLPRI on
        every change)."""
        init = c.process("")
        try:
            with open(f"/proc/{init.pid}/cgroup") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        v1 = v2 = None
        for line in lines:
            _, ctrls, rel = line.split(":", 2)
            if "memory" in ctrls.split(","):
                v1 = f"/sys/fs/cgroup/memory{rel}"
            elif ctrls == "" and stats.unified_host():
                v2 = f"/sys/fs/cgroup{rel}"
        if v1 and os.path.exists(os.path.join(v1, "memory.oom_control")):
            target = self._oom_v1(c, v1)
        elif v2 and os.path.exists(os.path.join(v2, "memory.events")):
            target = self._oom_v2(c, v2)
        else:
            return
        if target is not None:
            c.oom_watch = threading.Thread(target=target, daemon=True)
            c.oom_watch.start()

    def _oom(self, c: Container) -> None:
        self.publisher.publish("/tasks/oom", "containerd.events.TaskOOM",
                               pb.TaskOOM(container_id=c.id))

    def _oom_v1(self, c: Container, path: str):
        try:
            efd = os.eventfd(0, os.EFD_CLOEXEC)
            ofd = os.open(os.path.join(path, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
            with open(os.path.join(path, "cgroup.event_control"), "w") as f:
                f.write(f"{efd} {ofd}")
        except OSError as e:
            self.log(f"oom watch {c.id}: {e}")
            return None

        def loop() -> None:
            try:
                while True:
                    os.eventfd_read(efd)
                    if not os.path.exists(path):    # the cgroup's removal signals too
                        return
                    self._oom(c)
            except OSError:
                pass
            finally:
                os.close(efd)
                os.close(ofd)
        return loop

    def _oom_v2(self, c: Container, path: str):
        import select

        init = c.process("")

        try:
            fd = os.open(os.path.join(path, "memory.events"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self.log(f"oom watch {c.id}: {e}")
            return None

        def kills() -> int:
            os.lseek(fd, 0, os.SEEK_SET)
            for line in os.read(fd, 4096).decode().splitlines():
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
            return 0

        def loop() -> None:
            try:
                seen = kills()
                poller = select.poll()
                poller.register(fd, select.POLLPRI | select.POLLERR)
                while not init.exited.is_set():
                    poller.poll(1000)
                    n = kills()
                    if n > seen:
                        self._oom(c)
                    seen = n
            except (OSError, ValueError):
                pass
            finally:
                os.close(fd)
        return loop


def unmount_rootfs(bundle: str) -> None:
    from pyoci.linux import syscalls as sc
    target = os.path.join(bundle, "rootfs")
    for _ in range(64):
        try:
            sc.umount2(target, sc.MNT_DETACH)
        except OSError:
            return


def _status_name(status: int) -> str:
    return {v: k for k, v in pb.STATUS_NAMES.items()}.get(status, "unknown")


def _code_for(msg: str) -> int:
    low = msg.lower()
    if "does not exist" in low or "not found" in low or "no such process" in low or \
            "not running" in low or "already finished" in low:
        return NOT_FOUND
    if "already exists" in low:
        return ALREADY_EXISTS
    return UNKNOWN


def _last_error(log: str, start: int) -> str:
    """The last error pyoci logged after offset start in its JSON log."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            entry = jsonio.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg", ""))
    return ""

