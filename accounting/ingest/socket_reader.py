"""A socket whose small reads are served from one large read: paho's packet reader, buffered.

paho-mqtt 2.2 reads every packet's command byte and each remaining-length byte with its own
`recv(1)`, then the rest with one more `recv`: three or more system calls per message, each
releasing and re-taking the interpreter lock the admitting and engine threads want. At tens of
thousands of messages a second that was ~3 s of the network thread per 300,000 readings
(docs/storage.md). `BufferedSocket` reads up to `chunk` bytes at once and serves paho's reads
from them, so one `recv` delivers many packets.

paho's loop waits in `select` for the socket to become readable, which it does not while the
bytes it wants are already in our buffer; paho asks `pending()` (the method TLS sockets have)
first and does not wait when it is positive, so `pending()` counts the buffered bytes (and a TLS
socket's own decrypted bytes). Everything else (send, fileno, setblocking, close, ...) is the
wrapped socket's own.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

CHUNK = 64 * 1024


class BufferedSocket:
    """Wraps a connected (plain or TLS) socket; `recv` serves from a read-ahead buffer."""

    __slots__ = ("_sock", "_chunk", "_buf", "_pos")

    def __init__(self, sock: socket.socket | ssl.SSLSocket, chunk: int = CHUNK) -> None:
        self._sock = sock
        self._chunk = chunk
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to `bufsize` bytes: from the buffer while it holds any, else from one large read.

        Like a socket's recv it may return fewer bytes than asked (paho reads the rest later),
        returns b"" at end of stream and raises what the socket raises (BlockingIOError,
        ssl.SSLWantReadError) when nothing is buffered and nothing has arrived.
        """
        pos = self._pos
        buf = self._buf
        if pos < len(buf):
            end = pos + bufsize
            if end >= len(buf):
                self._buf = b""
                self._pos = 0
                return buf[pos:] if pos else buf
            self._pos = end
            return buf[pos:end]
        data = self._sock.recv(max(bufsize, self._chunk), flags)
        if len(data) <= bufsize:
            return data
        self._buf = data
        self._pos = bufsize
        return data[:bufsize]

    def buffered(self) -> int:
        """Bytes read ahead and not yet handed out."""
        return len(self._buf) - self._pos

    def pending(self) -> int:
        """Bytes readable without waiting: buffered here, plus a TLS socket's decrypted ones."""
        inner = self._sock.pending() if isinstance(self._sock, ssl.SSLSocket) else 0
        return len(self._buf) - self._pos + inner

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, data: bytes, flags: int = 0) -> int:
        return self._sock.send(data, flags)

    def close(self) -> None:
        self._buf = b""
        self._pos = 0
        self._sock.close()

    def __getattr__(self, name: str) -> Any:  # setblocking, settimeout, getpeername, ...
        return getattr(self._sock, name)
