"""What a user installs is the program the tests run (setup.py): a wheel built from this
tree and installed into a scratch venv gives `pyoci` and `containerd-shim-pyoci-v2` that
start the interpreter isolated and without `site` (python -IS, through the static
launcher pyoci/linux/trampoline.c and NAME-script.py), the launcher's entry, and the
waiter; scripts/setup.sh's editable install gives the same commands. Offline: the wheel is
built without build isolation (setuptools from the project's venv) and installed with
--no-index into a venv that has the project venv's other packages (its dependencies).

Start-up of `pyoci state ID` (CPU time of the whole command, medians of 395 interleaved runs on
2 busy cores): the installed command 9.6 ms; python -IS on its script without the launcher
9.5 ms; a `#!python -IS` script importing the same entry (what scripts/setup.sh wrote before)
9.2 ms; the installed script started with `site` (no C compiler) 11.6 ms; the console script
`pyoci = pyoci.cli:main` of before 15.3 ms."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import zipfile

import pytest

from pyoci.linux import waiter
from support.harness import PYOCI, PYOCI_SCRIPT, REPO, Runtime, needs_root, reap_zombies

pytestmark = [pytest.mark.integration, needs_root]

COMMANDS = ("pyoci", "containerd-shim-pyoci-v2")
ELF = b"\x7fELF"
MEMFD_EXE = "/memfd:pyoci-waiter (deleted)"
NATIVE = platform.machine() in ("x86_64", "aarch64") and bool(
    shutil.which(os.environ.get("CC") or "cc"))
needs_cc = pytest.mark.skipif(not NATIVE, reason="no C compiler or an unsupported machine")
# what is not the project's source (the build must not depend on it)
_NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                     "pyoci-waiter", "cache", "out", ".pytest_cache",
                                     ".hypothesis", "tests", "conformance", "bench")


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)
    assert p.returncode == 0, f"{argv}: exit {p.returncode}: {p.stdout[-2000:]}{p.stderr[-2000:]}"
    return p


def build_wheel(dest, env: dict | None = None) -> str:
    """A wheel of a copy of this tree (no build artefacts), built without build isolation."""
    src = os.path.join(dest, "src")
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    out = os.path.join(dest, "dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", out, src], env=env)
    (wheel,) = os.listdir(out)
    return os.path.join(out, wheel)


def purelib(bindir: str) -> str:
    return os.path.join(os.path.dirname(bindir), "lib",
                        "python%d.%d" % sys.version_info[:2], "site-packages")


def install(wheel: str, venv: str) -> str:
    """A fresh venv (of the interpreter the project's venv was made from) with the wheel,
    its dependencies copied from the project's venv (so pip installs it offline); returns
    its bin/."""
    base = os.path.realpath(sys.executable)
    _run([base, "-m", "venv", "--without-pip", venv])
    bindir = os.path.join(venv, "bin")
    shutil.copytree(purelib(os.path.dirname(PYOCI)), purelib(bindir), dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("pyoci-*", "__editable__*pyoci*"))
    _run([sys.executable, "-m", "pip", "--python", os.path.join(bindir, "python"),
          "install", "-q", "--no-index", wheel])
    return bindir


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("packaging")
    wheel = build_wheel(str(d))
    bindir = install(wheel, str(d / "venv"))
    yield wheel, bindir
    shutil.rmtree(d, ignore_errors=True)


def started_without_site(bindir: str, command: str, args: list[str], tmp_path) -> None:
    """The command runs and neither `site` (a .pth file in the venv) nor PYTHON* variables
    (a PYTHONPATH shadowing the packages) reach its interpreter."""
    marker = tmp_path / "site-ran"
    pth = os.path.join(purelib(bindir), "zz-packaging-test.pth")
    with open(pth, "w") as f:
        f.write(f"import os; open({str(marker)!r}, 'w').close()\n")
    shadow = tmp_path / "shadow"
    (shadow / "pyoci").mkdir(parents=True)
    (shadow / "pyoci" / "__init__.py").write_text(
        f"open({str(tmp_path / 'env-ran')!r}, 'w').close()\n")
    try:
        p = subprocess.run([os.path.join(bindir, command), *args], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL,
                           env=dict(os.environ, PYTHONPATH=str(shadow)))
    finally:
        os.unlink(pth)
    assert p.returncode == 0, p.stderr
    assert not marker.exists(), f"{command} started the interpreter with site"
    assert not (tmp_path / "env-ran").exists(), f"{command} honoured PYTHONPATH"


# --- the wheel --------------------------------------------------------------------------

@needs_cc
def test_wheel_holds_the_commands_and_the_waiter(built):
    wheel, _ = built
    name = os.path.basename(wheel)
    assert name.endswith(f"-py3-none-linux_{platform.machine()}.whl"), name
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        data = "pyoci-0.1.0.data/scripts/"
        for cmd in COMMANDS:
            assert z.read(data + cmd)[:4] == ELF
            script = z.read(data + cmd + "-script.py").decode()
            assert script.startswith("#!python\n")        # the installer's to complete
            assert REPO not in script                      # nothing of this tree
        assert z.read("pyoci/linux/pyoci-waiter")[:4] == ELF
        assert not [n for n in names if n.endswith((".c", ".h"))]
        assert "Root-Is-Purelib: false" in z.read("pyoci-0.1.0.dist-info/WHEEL").decode()


def test_a_wheel_from_the_sdist_has_them_too(tmp_path):
    """The sdist (as `python -m build` makes it first) has the programs' sources: a wheel
    built from it has the commands and the waiter."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
          "print(build_meta.build_sdist(sys.argv[1]))", str(tmp_path / "sdist")], cwd=src)
    (sdist,) = os.listdir(tmp_path / "sdist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(tmp_path / "dist"), str(tmp_path / "sdist" / sdist)])
    (wheel,) = os.listdir(tmp_path / "dist")
    with zipfile.ZipFile(tmp_path / "dist" / wheel) as z:
        names = set(z.namelist())
    assert "pyoci/linux/waiter.py" in names
    if NATIVE:
        assert {"pyoci-0.1.0.data/scripts/pyoci", "pyoci-0.1.0.data/scripts/pyoci-script.py",
                "pyoci/linux/pyoci-waiter"} <= names


# --- the installed commands -------------------------------------------------------------

@needs_cc
@pytest.mark.parametrize("command, args", [("pyoci", ["--version"]),
                                           ("containerd-shim-pyoci-v2", ["-v"])])
def test_installed_commands_start_isolated_without_site(built, tmp_path, command, args):
    _, bindir = built
    with open(os.path.join(bindir, command + "-script.py")) as f:
        assert f.readline() == f"#!{os.path.join(bindir, 'python')}\n"
    started_without_site(bindir, command, args, tmp_path)


@needs_cc
def test_a_command_without_its_script_says_so(built, tmp_path):
    """The launcher's failures are one line and exit status 127 (a shell's for a command it
    cannot execute)."""
    _, bindir = built
    shutil.copy(os.path.join(bindir, "pyoci"), tmp_path / "pyoci")
    p = subprocess.run([str(tmp_path / "pyoci"), "--version"], capture_output=True, text=True,
                       timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (
        127, "", f"pyoci: cannot open {tmp_path}/pyoci-script.py: No such file or directory\n")
    (tmp_path / "pyoci-script.py").write_text("#!/nonexistent/python\n")
    p = subprocess.run([str(tmp_path / "pyoci"), "--version"], capture_output=True, text=True,
                       timeout=60)
    assert (p.returncode, p.stderr) == (
        127, "pyoci: cannot execute /nonexistent/python: No such file or directory\n")


@needs_cc
def test_a_script_away_from_its_packages_finds_them_through_site(built, tmp_path):
    """Where the packages are not in PREFIX/lib/pythonX.Y/site-packages beside the script's
    PREFIX/bin (e.g. Debian's /usr/local/lib/python3/dist-packages), the script looks again
    with `site`'s directories (the venv's here) instead of failing."""
    _, bindir = built
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "pyoci-script.py"
    shutil.copy(os.path.join(bindir, "pyoci-script.py"), script)
    marker = tmp_path / "site-ran"
    pth = os.path.join(purelib(bindir), "zz-packaging-test.pth")
    with open(pth, "w") as f:
        f.write(f"import os; open({str(marker)!r}, 'w').close()\n")
    try:
        p = _run([os.path.join(bindir, "python"), "-IS", str(script), "--version"])
    finally:
        os.unlink(pth)
    assert p.stdout.startswith("pyoci version ")
    assert marker.exists()


@needs_cc
def test_installed_pyoci_runs_a_container_with_the_waiter(built, bundle_factory, config,
                                                          tmp_path):
    """create (the init waits in the installed waiter), state, start, delete."""
    _, bindir = built
    installed_waiter = os.path.join(purelib(bindir), "pyoci", "linux", waiter.NAME)
    assert os.access(installed_waiter, os.X_OK)
    config["process"]["args"] = ["/bin/true"]
    bundle = bundle_factory(config)
    # through a symbolic link, as from /usr/local/bin (README)
    os.symlink(os.path.join(bindir, "pyoci"), tmp_path / "pyoci")
    rt = Runtime(str(tmp_path / "pyoci"), str(tmp_path / "root"))
    env = {k: v for k, v in os.environ.items() if k != waiter.ENV}
    try:
        rt("create", "--bundle", bundle, "c1", check=True, env=env)
        st = rt.state("c1")
        assert st["status"] == "created"
        assert os.readlink(f"/proc/{st['pid']}/exe") == MEMFD_EXE
        rt("start", "c1", check=True)
        for _ in range(500):
            if rt.state("c1")["status"] == "stopped":
                break
            reap_zombies()
        assert rt.state("c1")["status"] == "stopped"
        rt("delete", "c1", check=True)
        r = rt("state", "c1")
        assert r.returncode == 1 and "does not exist" in r.stderr
    finally:
        rt.cleanup()


@needs_cc
def test_the_waiter_is_found_beside_the_installed_package(built):
    """The installed package's waiter is the one it executes (not this tree's)."""
    _, bindir = built
    p = _run([os.path.join(bindir, "python"), "-IS", "-c",
              f"import sys; sys.path.append({purelib(bindir)!r}); "
              "from pyoci.linux import waiter; print(waiter.binary_path())"],
             env={k: v for k, v in os.environ.items() if k != waiter.ENV})
    assert p.stdout.strip() == os.path.join(purelib(bindir), "pyoci", "linux", waiter.NAME)


# --- scripts/setup.sh's venv: the same commands, editable -------------------------------

@needs_cc
def test_setup_venv_has_the_same_commands(built):
    _, bindir = built
    venv_bin = os.path.dirname(PYOCI)
    for cmd in COMMANDS:
        with open(os.path.join(venv_bin, cmd), "rb") as a, \
                open(os.path.join(bindir, cmd), "rb") as b:
            assert a.read() == b.read(), f"{cmd}: not the wheel's launcher"
    with open(PYOCI_SCRIPT) as f:
        text = f.read()
    assert f"sys.path.insert(0, {REPO!r})" in text      # editable: this tree's modules
    with open(os.path.join(bindir, "pyoci-script.py")) as f:
        assert text.split("\n", 1)[1].replace(f"sys.path.insert(0, {REPO!r})\n", "") == \
            f.read().split("\n", 1)[1]


# --- without a C compiler ---------------------------------------------------------------

def test_without_a_compiler_the_commands_are_the_python_scripts(tmp_path, bundle_factory,
                                                                 config):
    """The build goes on: a pure wheel whose commands are the scripts themselves (started
    with site) and no waiter; the created container's init waits in Python."""
    wheel = build_wheel(str(tmp_path), env=dict(os.environ, CC="/nonexistent/cc"))
    assert wheel.endswith("-py3-none-any.whl"), wheel
    with zipfile.ZipFile(wheel) as z:
        assert not [n for n in z.namelist() if n.endswith(("-script.py", "pyoci-waiter"))]
        assert z.read("pyoci-0.1.0.data/scripts/pyoci").startswith(b"#!python\n")
    bindir = install(wheel, str(tmp_path / "venv"))
    config["process"]["args"] = ["/bin/true"]
    rt = Runtime(os.path.join(bindir, "pyoci"), str(tmp_path / "root"))
    try:
        rt("create", "--bundle", bundle_factory(config), "c1", check=True)
        pid = rt.state("c1")["pid"]
        assert os.readlink(f"/proc/{pid}/exe") != MEMFD_EXE
        rt("start", "c1", check=True)
        rt("delete", "--force", "c1", check=True)
    finally:
        rt.cleanup()
