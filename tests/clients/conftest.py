"""pyoci under real clients: containerd (ctr, CRI), podman + conmon, dockerd. Each client runs
once per session with its state in a private directory (scripts/clients/daemons.py); every
scenario runs with runc and with pyoci and asserts the same observable result."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clientlib import RUNTIMES, daemons, image, ok, reap_zombies, sh  # noqa: E402


@pytest.fixture(scope="session")
def image_archive(tmp_path_factory):
    if not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed")
    return image.build_archive(str(tmp_path_factory.mktemp("client-image") / "busybox.tar"))


@pytest.fixture(params=["runc", "pyoci"])
def rt(request):
    """The runtime under test, by the name the clients know it by."""
    return request.param


@pytest.fixture(scope="session")
def containerd(image_archive):
    d = daemons.start_containerd(RUNTIMES)
    try:
        for ns in ("default", "k8s.io"):
            ok(daemons.ctr(d, "image", "import", image_archive, namespace=ns))
        yield d
    finally:
        daemons.stop(d)
        reap_zombies()


@pytest.fixture(scope="session")
def dockerd(image_archive):
    d = daemons.start_dockerd(RUNTIMES)
    try:
        ok(daemons.docker(d, "load", "-i", image_archive), d.env)
        yield d
    finally:
        daemons.stop(d)
        reap_zombies()


@pytest.fixture(scope="session")
def podman(image_archive):
    d = daemons.setup_podman(RUNTIMES)
    try:
        ok(daemons.podman(d, "load", "-i", image_archive), d.env)
        yield d
    finally:
        sh(daemons.podman(d, "rm", "--all", "--force", "--time", "0"), d.env)
        daemons.stop(d)
        reap_zombies()
