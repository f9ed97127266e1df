"""The buffered socket under paho's reads: packets split across reads at every byte, many in one
read, TLS, and a real Mosquitto delivering a burst to the subscriber through it."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from accounting.ingest.socket_reader import BufferedSocket
from accounting.ingest.subscriber import BufferedClient, MqttSubscriber
from tests.gateway.test_tls_auth import make_certs
from tests.services import MosquittoServer


def frame(payload: bytes, command: int = 0x32) -> bytes:
    """An MQTT fixed header (command byte, variable-length remaining length) and its body."""
    n = len(payload)
    length = bytearray()
    while True:
        byte, n = n % 128, n // 128
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([command]) + bytes(length) + payload


class PahoLikeReader:
    """Reads frames the way paho 2.2's `_packet_read` does: recv(1) for the command byte, recv(1)
    per remaining-length byte, then recv(rest) until the body is whole; stops on BlockingIOError."""

    def __init__(self, sock: BufferedSocket) -> None:
        self.sock = sock
        self.packets: list[bytes] = []
        self._reset()

    def _reset(self) -> None:
        self.command: bytes = b""
        self.length_bytes = bytearray()
        self.length: int | None = None
        self.body = bytearray()

    def read_available(self) -> None:
        try:
            while True:
                if not self.command:
                    self.command = self.sock.recv(1)
                    assert self.command, "end of stream"
                while self.length is None:
                    byte = self.sock.recv(1)
                    assert len(byte) == 1
                    self.length_bytes += byte
                    if not byte[0] & 0x80:
                        self.length = sum((b & 0x7F) << (7 * i) for i, b in enumerate(self.length_bytes))
                while len(self.body) < self.length:
                    data = self.sock.recv(self.length - len(self.body))
                    assert data and len(data) <= self.length - len(self.body)
                    self.body += data
                self.packets.append(self.command + bytes(self.length_bytes) + bytes(self.body))
                self._reset()
        except BlockingIOError:
            return


PACKETS = [frame(b""), frame(b"x" * 5), frame(bytes(range(256)) * 2 + b"tail"), frame(b"y" * 127),
           frame(b"z" * 128), frame(b"\x00" * 3, command=0x40)]
STREAM = b"".join(PACKETS)


@pytest.mark.parametrize("chunk", [1, 7, 130, 64 * 1024])
def test_frames_split_at_every_byte_are_read_whole_and_in_order(chunk):
    for split in range(len(STREAM) + 1):
        left, right = socket.socketpair()
        try:
            right.setblocking(False)
            buffered = BufferedSocket(right, chunk=chunk)
            reader = PahoLikeReader(buffered)
            left.sendall(STREAM[:split])
            reader.read_available()
            assert buffered.pending() == 0  # everything buffered was handed out before waiting
            left.sendall(STREAM[split:])
            reader.read_available()
            assert reader.packets == PACKETS, f"split at byte {split}, chunk {chunk}"
        finally:
            left.close()
            right.close()


def test_many_frames_in_one_read_are_served_without_the_socket():
    left, right = socket.socketpair()
    try:
        right.setblocking(False)
        buffered = BufferedSocket(right)
        left.sendall(STREAM)
        select.select([right], [], [], 5)
        assert buffered.recv(1) == STREAM[:1]
        # The kernel has nothing left to read: paho's select would wait; pending() tells it not to.
        assert select.select([right], [], [], 0)[0] == []
        assert buffered.pending() == len(STREAM) - 1
        reader = PahoLikeReader(buffered)
        reader.command = STREAM[:1]
        reader.read_available()
        assert reader.packets == PACKETS
        assert buffered.pending() == 0
        with pytest.raises(BlockingIOError):
            buffered.recv(1)
        left.close()
        assert buffered.recv(1) == b""  # end of stream, as a socket says it
    finally:
        right.close()


def test_a_read_larger_than_the_buffer_is_served_from_the_socket_in_one_call():
    left, right = socket.socketpair()
    try:
        big = frame(b"b" * 300_000)
        left.sendall(STREAM[:3])
        buffered = BufferedSocket(right, chunk=1024)
        assert buffered.recv(1) == STREAM[:1]
        assert buffered.recv(100) == STREAM[1:3]  # a short read: what was buffered
        threading.Thread(target=left.sendall, args=(big,), daemon=True).start()
        got = bytearray()
        while len(got) < len(big):
            got += buffered.recv(len(big) - len(got))
        assert bytes(got) == big and buffered.pending() == 0
    finally:
        left.close()
        right.close()


def test_tls_frames_are_read_whole(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs / "server.crt", certs / "server.key")
    client_ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    listener = socket.create_server(("127.0.0.1", 0))
    stream = STREAM * 200  # more than one TLS record (16 KiB)

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(stream)
            tls.recv(1)  # until the client closes

    threading.Thread(target=serve, daemon=True).start()
    raw = socket.create_connection(listener.getsockname())
    tls = client_ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        tls.setblocking(False)
        buffered = BufferedSocket(tls)
        reader = PahoLikeReader(buffered)
        while len(reader.packets) < len(PACKETS) * 200:
            if buffered.pending() == 0:
                select.select([buffered], [], [], 5)
            with contextlib.suppress(ssl.SSLWantReadError):  # a TLS record not yet whole
                reader.read_available()
        assert reader.packets == PACKETS * 200
    finally:
        tls.close()
        listener.close()


@pytest.mark.timeout(60)
def test_subscriber_receives_a_burst_whole_through_the_buffered_socket(tmp_path):
    broker = MosquittoServer(tmp_path / "mosquitto")
    broker.start()
    subscriber = MqttSubscriber("127.0.0.1", broker.port, "buffered-test", ["tanji/v1/s/g/readings"])
    subscriber.start()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="burst", protocol=mqtt.MQTTv5)
    try:
        assert subscriber.connected.wait(20)
        while subscriber.subscribed_at is None:
            subscriber.connected.wait(0.05)
        assert isinstance(subscriber._client.socket(), BufferedSocket)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        sent = [b'{"seq": %d, "pad": "%s"}' % (i, b"p" * (i % 300)) for i in range(3000)]
        infos = [publisher.publish("tanji/v1/s/g/readings", p, qos=1) for p in sent]
        for info in infos:
            info.wait_for_publish(30)
        got = []
        while len(got) < len(sent):
            batch = [subscriber.inbox.get(timeout=30)]
            got.extend(m.payload for m in batch)
            subscriber.ack(batch)
        assert got == sent
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        subscriber.stop()
        broker.stop()


def publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 3.1.1 PUBLISH at QoS 0, as a broker sends it."""
    name = topic.encode()
    return frame(len(name).to_bytes(2, "big") + name + payload, command=0x30)


def test_one_read_turn_handles_every_whole_packet_already_buffered():
    """paho reads one packet per turn of its loop and asks select before the next; the client
    reads on while whole packets wait in its buffer, and a partial one waits for the rest."""
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="reader", protocol=mqtt.MQTTv311)
    got: list[bytes] = []
    client.on_message = lambda c, u, message: got.append(message.payload)
    left, right = socket.socketpair()
    try:
        right.setblocking(False)
        client._sock = BufferedSocket(right)  # as _create_socket makes it on connect
        packets = [publish_packet("tanji/v1/s/g/readings", b"%d" % i * (i + 1)) for i in range(10)]
        stream = b"".join(packets)
        left.sendall(stream[:-3])  # the tenth packet not yet whole
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        assert got == [b"%d" % i * (i + 1) for i in range(9)]
        left.sendall(stream[-3:])
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        assert got == [b"%d" % i * (i + 1) for i in range(10)]
    finally:
        client._sock = None
        left.close()
        right.close()
