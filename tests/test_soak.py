"""Soak and concurrency (issue 11 §5): many lifecycles in a row, many containers at once, many
commands at once on one container; before and after, the same counts of mounts, cgroups, fds,
zombies, processes and state entries.

Quick sizes here (CI); the documented large run is `scripts/soak.sh` (PYOCI_SOAK_CYCLES=1000,
PYOCI_SOAK_ROUNDS=50). With PYOCI_SOAK_REPORT=FILE each test appends its figures (JSON lines).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import pytest

from support import fuzz
from support.fuzz import check_output
from support.harness import IS_ROOT, PYOCI, Runtime, reap_zombies
from support.rootfs import base_config

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

CYCLES = int(os.environ.get("PYOCI_SOAK_CYCLES", "25"))
PARALLEL = int(os.environ.get("PYOCI_SOAK_PARALLEL", "50"))
ROUNDS = int(os.environ.get("PYOCI_SOAK_ROUNDS", "4"))
CONCURRENT = 20


def counts(root: str, mine: str) -> dict:
    """What a container can leave behind, counted."""
    reap_zombies()
    me = os.getpid()
    pids = fuzz._descendants(me)
    zombies = sum(1 for p in pids if not fuzz._alive(p) and os.path.exists(f"/proc/{p}"))
    fds = len(os.listdir("/proc/self/fd"))
    for p in pids:
        try:
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return {
        "mounts": len(fuzz._mounts(mine)),
        "cgroups": sum(len(fuzz._walk_dirs(r)) for r in fuzz._cgroup_roots()),
        "fds": fds,
        "zombies": zombies,
        "processes": len(pids) - zombies,
        "state_entries": len(os.listdir(root)) if os.path.isdir(root) else 0,
    }


def report(name: str, **figures) -> None:
    line = json.dumps({"test": name, **figures})
    print(line)
    path = os.environ.get("PYOCI_SOAK_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def pyoci(root: str, *args, timeout: float = 60, reap: bool = True):
    """One command under root (support.harness.Runtime; reap=False in the racing threads: a
    waitpid(-1) in one thread could take another thread's child)."""
    return Runtime(PYOCI, root)(*args, timeout=timeout, reap=reap)


def ok(r) -> None:
    check_output(r)
    assert r.rc == 0, r


@pytest.fixture
def env(tmp_path, rootfs_cache):
    top = str(tmp_path)
    root = os.path.join(top, "root")
    os.makedirs(root, mode=0o700)
    bundles = {}
    for name, args in (("sleep", ["sleep", "100000"]), ("true", ["true"])):
        b = os.path.join(top, name)
        os.makedirs(b)
        os.symlink(rootfs_cache, os.path.join(b, "rootfs"))
        cfg = base_config(args)
        cfg["root"]["readonly"] = True      # the rootfs is the shared cache
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(cfg, f)
        bundles[name] = b
    yield top + "/", root, bundles
    for cid in os.listdir(root):
        pyoci(root, "delete", "--force", cid)
    reap_zombies()


def wait_status(root: str, cid: str, want: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        s = json.loads(pyoci(root, "state", cid).out)["status"]
        if s == want or time.monotonic() > deadline:
            return s
        time.sleep(0.01)


def test_soak_lifecycles(env):
    """CYCLES times: create, start, exec, exec -d, kill, delete; and run in the foreground."""
    mine, root, b = env
    before = counts(root, mine)
    t0 = time.monotonic()
    samples = []
    for i in range(CYCLES):
        cid = f"soak{i}"
        ok(pyoci(root, "create", "--bundle", b["sleep"], cid))
        ok(pyoci(root, "start", cid))
        ok(pyoci(root, "exec", cid, "true"))
        ok(pyoci(root, "exec", "-d", cid, "sleep", "0"))
        ok(pyoci(root, "kill", cid, "KILL"))
        assert wait_status(root, cid, "stopped") == "stopped"
        ok(pyoci(root, "delete", cid))
        r = pyoci(root, "run", "--bundle", b["true"], f"run{i}")
        ok(r)
        if (i + 1) % max(1, CYCLES // 5) == 0:
            samples.append({"cycle": i + 1, **counts(root, mine)})
    after = counts(root, mine)
    report("soak", cycles=CYCLES, seconds=round(time.monotonic() - t0, 1), before=before,
           after=after, samples=samples)
    assert after == before, (before, after, samples)


def test_parallel_containers(env):
    """PARALLEL containers created, started, exec'd into, listed and deleted at once."""
    mine, root, b = env
    before = counts(root, mine)
    t0 = time.monotonic()
    ids = [f"par{i}" for i in range(PARALLEL)]

    def up(cid):
        return [pyoci(root, "run", "-d", "--bundle", b["sleep"], cid, reap=False),
                pyoci(root, "exec", cid, "true", reap=False)]

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(up, ids))
    for rs in results:
        for r in rs:
            ok(r)
    listed = json.loads(pyoci(root, "list", "--format", "json", reap=False).out)
    assert sorted(s["id"] for s in listed) == sorted(ids)
    assert {s["status"] for s in listed} == {"running"}
    pids = {s["pid"] for s in listed}
    assert len(pids) == PARALLEL
    during = counts(root, mine)
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda c: pyoci(root, "delete", "--force", c, reap=False),
                                ids))
    for r in results:
        ok(r)
    reap_zombies()
    after = counts(root, mine)
    report("parallel", containers=PARALLEL, seconds=round(time.monotonic() - t0, 1),
           before=before, during=during, after=after)
    assert after == before, (before, after)


# every command that can race on one container ("@" is its id); drawn from at random
RACERS = [["state", "@"], ["kill", "@", "USR1"], ["kill", "@", "KILL"],
          ["kill", "--all", "@", "USR1"], ["exec", "@", "true"], ["exec", "-d", "@", "sleep", "0"],
          ["pause", "@"], ["resume", "@"], ["delete", "@"], ["delete", "--force", "@"],
          ["ps", "@"], ["events", "--stats", "@"], ["update", "--pids-limit", "200", "@"],
          ["start", "@"], ["list"]]

# what a raced command may answer besides success (one line, naming why)
EXPECTED = ("does not exist", "not running", "stopped", "paused", "created", "running",
            "not paused", "is not", "cannot", "container init", "exited")


def _racer_argv(cmd: list[str], cid: str) -> list[str]:
    return [cid if a == "@" else a for a in cmd]


def test_racing_commands_on_one_container(env):
    """ROUNDS times: CONCURRENT commands at once on one running container (state, kill,
    exec, pause, resume, delete...). Each answers 0 or one line; afterwards the container
    is coherent (state agrees with what happened) and delete --force leaves nothing."""
    mine, root, b = env
    before = counts(root, mine)
    rng = random.Random(int(os.environ.get("PYOCI_SOAK_SEED", "11")))
    t0 = time.monotonic()
    tally: dict[str, int] = {}
    for rnd in range(ROUNDS):
        cid = f"race{rnd}"
        ok(pyoci(root, "run", "-d", "--bundle", b["sleep"], cid))
        cmds = [_racer_argv(rng.choice(RACERS), cid) for _ in range(CONCURRENT)]
        barrier = threading.Barrier(CONCURRENT)

        def go(argv, barrier=barrier):
            barrier.wait()
            return pyoci(root, *argv, reap=False)

        with ThreadPoolExecutor(CONCURRENT) as pool:
            futures = [pool.submit(go, argv) for argv in cmds]
            while True:
                pending = wait(futures, timeout=5).not_done
                if not pending:
                    break
                # an exec whose process a pause froze before it ran waits for a resume (as
                # with runc): when only execs are left and the container is paused, resume
                # it as a client would (a hang otherwise meets pyoci()'s timeout)
                if all(cmds[futures.index(f)][0] == "exec" for f in pending):
                    r = pyoci(root, "state", cid, reap=False)
                    if r.rc == 0 and json.loads(r.out)["status"] == "paused":
                        pyoci(root, "resume", cid, reap=False)
                        key = "resume for an exec a pause froze"
                        tally[key] = tally.get(key, 0) + 1
            results = [f.result() for f in futures]
        deleted = False
        for argv, r in zip(cmds, results):
            # an exec'd process killed with the container (kill KILL, delete --force): 137;
            # by a racing `kill --all ID USR1`, which reaches it too: 128 + SIGUSR1
            codes = (0, 137) + ((138,) if ["kill", "--all", cid, "USR1"] in cmds else ())
            err = check_output(r, ok_codes=codes if argv[0] == "exec" else (0,))
            key = f"{argv[0]} {'ok' if err is None else 'refused'}"
            tally[key] = tally.get(key, 0) + 1
            if err is not None:
                assert any(e in err for e in EXPECTED), (argv, r)
            if argv[:2] == ["delete", "--force"] and r.rc == 0:
                deleted = True
            if argv[0] == "delete" and r.rc == 0:
                deleted = True
        reap_zombies()
        r = pyoci(root, "state", cid)
        if deleted:
            assert r.rc == 1 and "does not exist" in r.err, r
        else:
            check_output(r)
            assert json.loads(r.out)["status"] in ("running", "paused", "stopped"), r
            pyoci(root, "resume", cid)
            ok(pyoci(root, "delete", "--force", cid))
        assert counts(root, mine) == before, f"round {rnd}: {cmds}"
    after = counts(root, mine)
    report("race", rounds=ROUNDS, commands=ROUNDS * CONCURRENT,
           seconds=round(time.monotonic() - t0, 1), before=before, after=after, tally=tally)
    assert after == before
