"""Task events for containerd, in order (TaskStart before TaskExit), from one thread.

containerd (1.5 and later) gives its shims TTRPC_ADDRESS, its ttrpc socket: each event is
forwarded there (containerd.services.events.ttrpc.v1.Events/Forward, an Envelope with the
event as an Any), over one connection kept open, as containerd's own shims do. Where that is
not possible (no TTRPC_ADDRESS, containerd restarting) the event goes through the publish
binary containerd named (-publish-binary), run as
`BINARY --address ADDRESS publish --topic TOPIC --namespace NS` with the Any on its stdin.
The Any's type URL is the event's containerd message name (containerd.events.TaskExit...).
A failed publish is logged and retried a few times."""

from __future__ import annotations

import threading
import time
from collections import deque

from pyoci.shim import pb
from pyoci.shim.ttrpc import Client, TtrpcError

ATTEMPTS = 3
EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
NAMESPACE_KEY = "containerd-namespace-ttrpc"


class Publisher:
    def __init__(self, binary: str, address: str, namespace: str, reaper, log,
                 ttrpc_address: str | None = None):
        self.binary = binary
        self.address = address
        self.namespace = namespace
        self.reaper = reaper
        self.log = log
        self.ttrpc_address = ttrpc_address
        self._client: Client | None = None
        self._pending: deque = deque()
        self._cond = threading.Condition()
        self._busy = False
        threading.Thread(target=self._loop, name="publisher", daemon=True).start()

    def publish(self, topic: str, type_url: str, event) -> None:
        env = pb.Envelope(timestamp=pb.timestamp(time.time()), namespace=self.namespace,
                          topic=topic, event=pb.pack(type_url, event))
        with self._cond:
            self._pending.append(env)
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every event so far is sent (or given up)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                env = self._pending.popleft()
                self._busy = True
            try:
                self._send(env)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, env) -> None:
        for attempt in range(ATTEMPTS):
            if self.ttrpc_address and self._forward(env, self.ttrpc_address):
                return
            if self.binary and self._exec(env):
                return
            time.sleep(0.1 * (attempt + 1))
        self.log(f"event {env.topic} not published")

    def _forward(self, env, address: str) -> bool:
        try:
            if self._client is None:
                self._client = Client(address, timeout=10)
            self._client.call(EVENTS_SERVICE, "Forward", pb.ForwardRequest(envelope=env),
                              pb.Empty, metadata={NAMESPACE_KEY: self.namespace})
            return True
        except (OSError, TtrpcError) as e:
            self.log(f"forward {env.topic} to {self.ttrpc_address}: {e}")
            if self._client is not None:
                self._client.close()
                self._client = None
            return False

    def _exec(self, env) -> bool:
        argv = [self.binary, "--address", self.address, "publish", "--topic", env.topic,
                "--namespace", self.namespace]
        try:
            code, _, err = self.reaper.run(argv, input=env.event.SerializeToString())
        except OSError as e:
            code, err = -1, str(e).encode()
        if code == 0:
            return True
        self.log(f"publish {env.topic}: exit {code}: {err.decode(errors='replace').strip()}")
        return False
