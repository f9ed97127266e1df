"""The sd_notify protocol: tell systemd a `Type=notify` service is ready (no dependency).

systemd passes the path of a datagram socket in NOTIFY_SOCKET; a service sends newline-separated
`KEY=VALUE` assignments to it (`READY=1`, `STATUS=...`, `STOPPING=1`). Units that wait for
accounting (`After=tanji-accounting.service`) then start once it is really ingesting, not when
its process merely exists. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*assignments: str) -> bool:
    """Send `assignments` (e.g. "READY=1", "STATUS=ingesting") to systemd; False when not under it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode())
    except OSError as exc:  # a notification lost must never stop the service
        log.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True
