"""Task events, published as containerd's runc shim does without a ttrpc publisher: the
publish binary containerd named (-publish-binary) run as
`BINARY --address ADDRESS publish --topic TOPIC --namespace NS` with the event, an Any
(type URL: the event's containerd message name), on its stdin. One thread sends them in
order (TaskStart before TaskExit); a failed publish is logged and retried a few times."""

from __future__ import annotations

import queue
import threading
import time

from pyoci.shim import pb

ATTEMPTS = 3


class Publisher:
    def __init__(self, binary: str, address: str, namespace: str, reaper, log):
        self.binary = binary
        self.address = address
        self.namespace = namespace
        self.reaper = reaper
        self.log = log
        self.queue: queue.Queue = queue.Queue()
        self.idle = threading.Event()
        self.idle.set()
        threading.Thread(target=self._loop, name="publisher", daemon=True).start()

    def publish(self, topic: str, type_url: str, event) -> None:
        self.idle.clear()
        self.queue.put((topic, pb.pack(type_url, event).SerializeToString()))

    def flush(self, timeout: float) -> bool:
        return self.idle.wait(timeout)

    def _loop(self) -> None:
        while True:
            topic, data = self.queue.get()
            if self.binary:
                self._send(topic, data)
            if self.queue.empty():
                self.idle.set()

    def _send(self, topic: str, data: bytes) -> None:
        argv = [self.binary, "--address", self.address, "publish", "--topic", topic,
                "--namespace", self.namespace]
        for attempt in range(ATTEMPTS):
            try:
                code, _, err = self.reaper.run(argv, input=data)
            except OSError as e:
                code, err = -1, str(e).encode()
            if code == 0:
                return
            self.log(f"publish {topic}: exit {code}: {err.decode(errors='replace').strip()}")
            time.sleep(0.1 * (attempt + 1))
