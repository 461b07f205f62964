"""pyoci's build steps beyond pyproject.toml: the installed commands and the waiter.

What `pip install .` (or a wheel, or `pip install -e .`, which scripts/setup.sh runs)
installs must be the program the tests run, as fast:

- The commands `pyoci` and `containerd-shim-pyoci-v2` (COMMANDS) start the interpreter
  isolated and without `site` (python -IS): no .pth files, sitecustomize or editable-install
  finder, no PYTHON* variables. pyoci starts an interpreter for every command, and `site`
  adds ~2 ms to each, a fifth of `pyoci state` (tests/test_packaging.py's docstring). A console
  script ([project.scripts]) cannot do this: pip and the other installers write its `#!`
  line themselves, without flags, and their wrapper imports `re`; a wheel's own script
  with "#!python -IS" gets the same treatment (pip keeps "#!INTERPRETER" only). So each
  command is two files in the scripts directory: NAME-script.py, the Python part, whose
  "#!python" the installer turns into the interpreter's path, and NAME, a small static
  program without libc (pyoci/linux/trampoline.c) that reads that line and executes
  INTERPRETER -IS NAME-script.py ARG... (what setuptools' Windows launchers do with
  NAME-script.py). No /bin/sh in between, and symbolic links to NAME (e.g. from
  /usr/local/bin) work: it finds its script through /proc/self/exe. Without a C compiler
  (or on an architecture other than x86_64/aarch64) NAME is the Python part itself: the
  same program, started with `site`.
- The waiter (pyoci/linux/waiter.c, see pyoci/linux/waiter.py) is built into the package
  (in place for an editable install); without a compiler the build goes on without it and
  the created container's init waits in Python.

Both programs are built here with the one set of flags (FLAGS). A wheel with them is tagged
for the platform (py3-none-linux_x86_64), else it is pure (py3-none-any).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import setuptools
from setuptools import Command, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build import build
from distutils.command.build_scripts import build_scripts  # setuptools provides distutils

HERE = os.path.dirname(os.path.abspath(__file__))

# The installed commands and the function each runs (module:function; its return value is
# the exit status). The one place that names the launcher's entry.
COMMANDS = {
    "pyoci": "pyoci.launcher:launch",
    "containerd-shim-pyoci-v2": "pyoci.shim.main:main",
}
SCRIPT_SUFFIX = "-script.py"        # pyoci/linux/trampoline.c's SUFFIX
TRAMPOLINE = "pyoci/linux/trampoline.c"
WAITER = "pyoci/linux/waiter.c"
WAITER_BINARY = "pyoci/linux/pyoci-waiter"     # pyoci.linux.waiter.DEFAULT_PATH

# Static, no libc, no start files, nothing but the code (pyoci/linux/nolibc.h).
FLAGS = ["-Os", "-static", "-nostdlib", "-nostartfiles", "-ffreestanding", "-fno-builtin",
         "-fno-stack-protector", "-fno-pie", "-no-pie", "-fno-asynchronous-unwind-tables",
         "-fno-unwind-tables", "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra",
         "-Werror", "-Wl,--gc-sections", "-Wl,-z,noexecstack", "-Wl,--build-id=none", "-s"]
MACHINES = ("x86_64", "aarch64")    # what pyoci/linux/nolibc.h supports


def compiler() -> str | None:
    """The C compiler ($CC, else cc) where the programs can be built, else None."""
    if sys.platform != "linux" or platform.machine() not in MACHINES:
        return None
    return shutil.which(os.environ.get("CC") or "cc")


def compile_program(source: str, out: str) -> bool:
    """Build one program (source relative to this directory) into out; False (and a
    warning) when it cannot be built."""
    cc = compiler()
    if not cc:
        print(f"pyoci: no C compiler: {os.path.basename(out)} not built", file=sys.stderr)
        return False
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    p = subprocess.run([cc, *FLAGS, "-o", out + ".tmp", os.path.join(HERE, source)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        print(f"pyoci: {os.path.basename(out)} not built: {p.stdout.strip()}",
              file=sys.stderr)
        try:
            os.unlink(out + ".tmp")
        except FileNotFoundError:
            pass
        return False
    os.replace(out + ".tmp", out)
    return True


def script_text(entry: str, source_dir: str | None) -> str:
    """NAME-script.py: the Python part of a command. source_dir: the project's directory
    for an editable install (its modules are imported from there)."""
    module, func = entry.split(":")
    editable = f"sys.path.insert(0, {source_dir!r})\n" if source_dir else ""
    return f'''#!python
# The Python part of an installed pyoci command (made by pyoci's setup.py, see there): the
# command next to it runs it as INTERPRETER -IS this file (pyoci/linux/trampoline.c).
import sys
{editable}if sys.flags.no_site:
    # The packages installed with this script: PREFIX/bin/.. /lib/pythonX.Y/site-packages
    # (a venv, --prefix, --user); a module not found there: site's directories after all.
    sys.path.append("%s/lib/python%d.%d/site-packages"
                    % (sys.argv[0].rsplit("/", 2)[0], *sys.version_info[:2]))

    class _Site:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if path is not None or name in sys.stdlib_module_names:
                return None
            sys.meta_path.remove(_Site)
            import site
            site.main()
            for finder in sys.meta_path:
                spec = getattr(finder, "find_spec", None) and finder.find_spec(name, path)
                if spec:
                    return spec
            return None

    sys.meta_path.append(_Site)
if sys.argv[0].endswith({SCRIPT_SUFFIX!r}):
    sys.argv[0] = sys.argv[0][:-{len(SCRIPT_SUFFIX)}]      # the command
from {module} import {func}
sys.exit({func}())
'''


class BuildScripts(build_scripts):
    """The commands (COMMANDS; `scripts` names the trampoline's source)."""

    def initialize_options(self) -> None:
        super().initialize_options()
        self.editable_mode = False
        self.outputs: list[str] = []

    def run(self) -> None:
        os.makedirs(self.build_dir, exist_ok=True)
        source_dir = HERE if self.editable_mode else None
        native = os.path.join(self.build_dir, ".trampoline")
        built = compile_program(TRAMPOLINE, native)
        self.outputs = []
        for name, entry in COMMANDS.items():
            path = os.path.join(self.build_dir, name)
            script = path + SCRIPT_SUFFIX if built else path
            if not built and os.path.exists(path + SCRIPT_SUFFIX):
                os.unlink(path + SCRIPT_SUFFIX)     # of an earlier build in this directory
            with open(script, "w") as f:
                f.write(script_text(entry, source_dir))
            os.chmod(script, 0o755)
            self.outputs.append(script)
            if built:
                shutil.copyfile(native, path)
                os.chmod(path, 0o755)
                self.outputs.append(path)
        if built:
            os.unlink(native)

    def get_outputs(self) -> list[str]:
        return list(self.outputs)


class BuildWaiter(Command):
    """pyoci/linux/pyoci-waiter: into the package being built, or in place (editable)."""

    description = "build the waiter (pyoci/linux/waiter.c)"
    user_options: list = []

    def initialize_options(self) -> None:
        self.editable_mode = False
        self.build_lib: str | None = None
        self.outputs: list[str] = []

    def finalize_options(self) -> None:
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def run(self) -> None:
        base = HERE if self.editable_mode else self.build_lib
        out = os.path.join(base, WAITER_BINARY)
        if compile_program(WAITER, out):
            os.chmod(out, 0o755)
            self.outputs = [out]
        elif self.editable_mode and os.path.exists(out):
            os.unlink(out)              # an old one from another source

    def get_outputs(self) -> list[str]:
        return [] if self.editable_mode else list(self.outputs)


class Build(build):
    sub_commands = build.sub_commands + [("build_waiter", None)]


class Distribution(setuptools.Distribution):
    def has_ext_modules(self) -> bool:
        """The programs are platform code: a platform wheel, the package in platlib."""
        return compiler() is not None


class BdistWheel(bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        """The programs do not depend on the Python version or ABI: py3-none-PLATFORM."""
        tag = super().get_tag()
        return tag if self.root_is_pure else ("py3", "none", tag[2])


setup(
    scripts=[TRAMPOLINE],
    distclass=Distribution,
    cmdclass={"build": Build, "build_scripts": BuildScripts, "build_waiter": BuildWaiter,
              "bdist_wheel": BdistWheel},
)
