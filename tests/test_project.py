"""Project-level checks: the CI image and the setup script install the same package list."""

import os
import re

from support.harness import REPO

LIST = "scripts/apt-packages.txt"


def packages() -> list[str]:
    with open(os.path.join(REPO, LIST)) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


def read(path: str) -> str:
    with open(os.path.join(REPO, path)) as f:
        return f.read()


def test_package_list_is_well_formed():
    pkgs = packages()
    assert pkgs, "empty package list"
    assert len(pkgs) == len(set(pkgs)), "duplicate packages"
    for p in pkgs:
        assert re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", p), p


def test_dockerfile_and_setup_install_the_one_list():
    docker = read("Dockerfile.ci")
    setup = read("scripts/setup.sh")
    assert LIST in docker and os.path.basename(LIST) in setup
    assert "FROM debian:bookworm" in docker
    assert "scripts/setup.sh" in docker and "scripts/test.sh" in docker
    # Neither names a package of the list by hand: the list is the only source.
    for p in packages():
        for name, text in (("Dockerfile.ci", docker), ("scripts/setup.sh", setup)):
            code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
            assert not re.search(rf"(?<![\w/.-]){re.escape(p)}(?![\w/.-])", code), \
                f"{name} names package {p} outside {LIST}"


def test_ci_runs_the_readme_test_command():
    readme = read("README.md")
    ci = read(".ci/run")
    assert "bash scripts/test.sh" in readme
    assert "scripts/test.sh" in ci


BACKPORTS = "scripts/apt-backports.txt"


def test_backports_packages_are_installed_by_setup_from_a_derived_source():
    with open(os.path.join(REPO, BACKPORTS)) as f:
        bp = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    assert "golang-1.23-go" in bp                     # the upstream runtime-tools suite
    assert not set(bp) & set(packages()), "a package in both lists"
    setup = read("scripts/setup.sh")
    assert os.path.basename(BACKPORTS) in setup and "scripts/backports.py" in setup
    assert re.search(r'install [^\n]*\\\n\s*-t "\$code-backports"', setup)
    # the Dockerfile gets them through setup.sh, and no file names a mirror
    assert "scripts/setup.sh" in read("Dockerfile.ci")
    for path in ("scripts/setup.sh", "scripts/backports.py", "Dockerfile.ci", BACKPORTS):
        assert not re.search(r"https?://", read(path).split('"""', 2)[-1]), path


def test_test_command_runs_the_upstream_suite():
    test = read("scripts/test.sh")
    assert "conformance/runtime-tools" in test
    assert os.access(os.path.join(REPO, "conformance/runtime-tools"), os.X_OK)


def test_test_modules_have_distinct_basenames():
    """pytest imports test modules by basename (no packages under tests/): two files of one
    name anywhere under tests/ stop the whole suite at collection."""
    seen: dict[str, str] = {}
    for top, _dirs, files in os.walk(os.path.join(REPO, "tests")):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                path = os.path.relpath(os.path.join(top, name), REPO)
                assert name not in seen, f"{path} and {seen[name]} share a basename"
                seen[name] = path


def test_type_checking_has_one_definition():
    """`TYPE_CHECKING` is defined once, in pyoci/__init__.py (False at run time, so typing stays
    off the hot commands); every module imports that one rather than rolling its own."""
    own = []
    for top, _dirs, files in os.walk(os.path.join(REPO, "pyoci")):
        for name in files:
            path = os.path.relpath(os.path.join(top, name), REPO)
            if name.endswith(".py") and path != os.path.join("pyoci", "__init__.py"):
                if re.search(r"^\s*TYPE_CHECKING\s*[:=]", read(path), re.M):
                    own.append(path)
    assert not own, f"TYPE_CHECKING defined again in {own}: use `from pyoci import TYPE_CHECKING`"
    assert re.search(r"^TYPE_CHECKING = False$", read("pyoci/__init__.py"), re.M)


def test_test_command_runs_the_linters():
    """scripts/test.sh runs scripts/lint.sh (ruff and mypy, configured in pyproject.toml),
    whose tools the `test` extra installs."""
    assert "bash scripts/lint.sh" in read("scripts/test.sh")
    lint = read("scripts/lint.sh")
    assert ".venv/bin/ruff check" in lint and ".venv/bin/mypy" in lint
    pyproject = read("pyproject.toml")
    assert "[tool.ruff.lint]" in pyproject and "[tool.mypy]" in pyproject
    test_extra = re.search(r"^test = \[(.*)\]$", pyproject, re.M)
    assert test_extra, "no test extra"
    for tool in ("ruff", "mypy"):
        assert f'"{tool}' in test_extra.group(1), f"{tool} is not in the test extra"


RECORD_USE = '''
from pyoci.record import dataclass, field


@dataclass
class R:
    a: int
    b: list[str] = field(default_factory=list)


r = R(1)
n: int = r.a + len(r.b)
R(a=2, b=["x"])
R(1, c=3)  # wrong
R("x")  # wrong
'''


def test_type_checkers_see_records(tmp_path):
    """mypy takes pyoci.record.dataclass records for dataclasses: their fields and __init__
    are checked (the lines of RECORD_USE marked wrong are, the rest is right). It failed on
    every line using R before record.dataclass carried dataclass_transform."""
    import subprocess
    import sys

    src = tmp_path / "use.py"
    src.write_text(RECORD_USE)
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir",
                        str(tmp_path / "cache"), "--config-file",
                        os.path.join(REPO, "pyproject.toml"), str(src)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    errors = [int(ln.split(":")[1]) for ln in r.stdout.splitlines() if ": error:" in ln]
    wrong = [i for i, ln in enumerate(RECORD_USE.splitlines(), 1) if ln.endswith("# wrong")]
    assert len(wrong) == 2 and errors == wrong, r.stdout
