"""Shared fixtures: a subreaper test process, a busybox rootfs, bundles, and runtime runners
with their own state roots that are cleaned up even when a test fails."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from support.rootfs import base_config, build_rootfs, make_bundle  # noqa: E402

from support.harness import (IS_ROOT, PYOCI, REPO, Runtime, needs_root,  # noqa: E402,F401
                             reap_zombies)


@pytest.fixture(scope="session")
def rootfs_cache(tmp_path_factory):
    if not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed")
    return build_rootfs(str(tmp_path_factory.mktemp("rootfs-cache") / "rootfs"))


@pytest.fixture
def bundle_factory(tmp_path, rootfs_cache):
    n = [0]

    def make(config: dict | None = None, args: list[str] | None = None) -> str:
        n[0] += 1
        b = str(tmp_path / f"bundle{n[0]}")
        return make_bundle(b, config=config, rootfs_cache=rootfs_cache, args=args)

    return make


@pytest.fixture
def config():
    """A fresh runc-like default config (edit it, then pass to bundle_factory)."""
    return base_config()


def _runtime_fixture(binary: str):
    root = tempfile.mkdtemp(prefix=f"{os.path.basename(binary)}-root-")
    rt = Runtime(binary, root)
    return rt


@pytest.fixture
def pyoci():
    if not IS_ROOT:
        pytest.skip("needs root")
    rt = _runtime_fixture(PYOCI)
    yield rt
    rt.cleanup()


@pytest.fixture
def runc():
    if not IS_ROOT:
        pytest.skip("needs root")
    path = shutil.which("runc")
    if not path:
        pytest.skip("runc is not installed")
    rt = _runtime_fixture(path)
    yield rt
    rt.cleanup()


@pytest.fixture(params=["pyoci", "runc"])
def runtime(request):
    """Parametrised over pyoci and runc: the same test must pass for both."""
    return request.getfixturevalue(request.param)
