"""An RS-485 line on one machine: two pseudo-terminals joined back to back.

The demo serves a plant's RS-485 meters from the simulator and polls them from the gateway,
each at its own end of a serial line, as on a real bus: the simulator's server on one pty,
the gateway's client on the other, and a thread copying bytes between the two masters, like
`socat pty pty` (what the tests use) without needing socat.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import tty

log = logging.getLogger(__name__)


class LinkedPtys:
    """Two pseudo-terminals whose traffic is relayed both ways; `ends` are their device paths."""

    def __init__(self, name: str = "rs485") -> None:
        self.name = name
        self._masters: list[int] = []
        self._slaves: list[int] = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no line editing: a serial line carries bytes
            self._masters.append(master)
            self._slaves.append(slave)
        self.ends: tuple[str, str] = (os.ttyname(self._slaves[0]), os.ttyname(self._slaves[1]))
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._relay, name=f"serial-line-{name}", daemon=True)

    def start(self) -> LinkedPtys:
        self._thread.start()
        return self

    def stop(self) -> None:
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        for fd in (*self._masters, *self._slaves, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> LinkedPtys:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _relay(self) -> None:
        a, b = self._masters
        peer = {a: b, b: a}
        while True:
            ready, _, _ = select.select([a, b, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                    while data:  # a pty accepts what its buffer holds; write the rest after
                        data = data[os.write(peer[fd], data):]
                except OSError as exc:  # e.g. EIO while an end is being reopened
                    log.debug("serial line %s: %s", self.name, exc)
