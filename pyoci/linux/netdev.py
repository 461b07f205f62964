"""linux.netDevices: move existing host interfaces into the container's network namespace
(renamed as asked), keeping their addresses and bringing them up, as runc does. Uses pyroute2
(netlink), imported only when a config has netDevices."""

from __future__ import annotations

import os

from pyoci import TYPE_CHECKING
from pyoci.errors import ConfigError, SysError

if TYPE_CHECKING:
    from pyoci.spec.config import NetDevice


def check(netdevs: dict, ns: dict) -> None:
    if not netdevs:
        return
    if "network" not in ns:
        raise ConfigError("linux.netDevices: needs a network namespace")
    for host, dev in netdevs.items():
        name = (dev or {}).get("name") or host
        for n, field in ((host, f"linux.netDevices[{host!r}]"),
                         (name, f"linux.netDevices[{host!r}].name")):
            if not n or len(n) > 15 or "/" in n or n in (".", "..") or any(c.isspace() for c in n):
                raise ConfigError(f"{field}: invalid interface name {n!r}")
        if not os.path.exists(f"/sys/class/net/{host}"):
            raise ConfigError(f"linux.netDevices: host interface {host!r} does not exist")


def move_devices(netdevs: dict[str, NetDevice], pid: int) -> dict[str, list[dict]]:
    """Move every device into pid's network namespace under its new name; returns the
    addresses each had ({new name: [{"address", "prefixlen", "family"}]}) to restore inside."""
    from pyroute2 import IPRoute

    saved: dict[str, list[dict]] = {}
    nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with IPRoute() as ip:
            for host, dev in netdevs.items():
                name = dev.name or host
                idx = ip.link_lookup(ifname=host)
                if not idx:
                    raise SysError(f"linux.netDevices: host interface {host!r} not found")
                addrs = []
                for a in ip.get_addr(index=idx[0]):
                    addr = a.get_attr("IFA_ADDRESS")
                    if addr and a["scope"] == 0:
                        addrs.append({"address": addr, "prefixlen": a["prefixlen"],
                                      "family": a["family"]})
                saved[name] = addrs
                try:
                    ip.link("set", index=idx[0], state="down")
                    ip.link("set", index=idx[0], net_ns_fd=nsfd, ifname=name)
                except Exception as e:  # pyroute2 raises NetlinkError
                    raise SysError(f"linux.netDevices: moving {host!r}: {e}") from None
    finally:
        os.close(nsfd)
    return saved


def configure_in_container(saved: dict[str, list[dict]]) -> None:
    """Inside the container's network namespace: restore addresses, set the links up."""
    if not saved:
        return
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        for name, addrs in saved.items():
            idx = ip.link_lookup(ifname=name)
            if not idx:
                raise SysError(f"linux.netDevices: {name!r} missing in the container")
            for a in addrs:
                try:
                    ip.addr("add", index=idx[0], address=a["address"], prefixlen=a["prefixlen"])
                except Exception as e:
                    raise SysError(f"linux.netDevices: {name}: address {a['address']}: {e}") \
                        from None
            ip.link("set", index=idx[0], state="up")
