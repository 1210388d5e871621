"""Which host names the program resolved to which addresses.

Outgoing filters may name hosts (`db.internal`); a connection only carries an address, so the
DNS relay records the answers it hands to the program (and the target's /etc/hosts is read
once), and the policy looks the address up here.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict
from collections.abc import Iterable

from mirrord_trace.net.sockaddr import IPAddress

# Enough for any program's working set; the oldest addresses are forgotten first.
MAX_ADDRESSES = 65536


def normal_name(name: str) -> str:
    return name.rstrip(".").lower()


class ResolvedNames:
    def __init__(self, capacity: int = MAX_ADDRESSES) -> None:
        self._names: OrderedDict[IPAddress, tuple[str, ...]] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def record(self, name: str, addresses: Iterable[IPAddress]) -> None:
        name = normal_name(name)
        with self._lock:
            for address in addresses:
                known = self._names.pop(address, ())
                self._names[address] = known if name in known else (*known, name)
                while len(self._names) > self._capacity:
                    self._names.popitem(last=False)

    def names_for(self, address: IPAddress) -> tuple[str, ...]:
        return self._names.get(address, ())

    def record_hosts_file(self, text: str) -> None:
        """Every name of an /etc/hosts file."""
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) < 2:
                continue
            try:
                address = ipaddress.ip_address(words[0])
            except ValueError:
                continue
            for name in words[1:]:
                self.record(name, [address])
