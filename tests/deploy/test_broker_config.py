"""`tanji broker-config` output, started with Debian's real Mosquitto 2.0.

The broker is the only thing that stops one gateway from forging another's readings, so the
proof is behavioural: the generated passwd, ACL and mosquitto.conf are run as they are, and
real MQTT clients find out what they may do. Counts are exact; nothing is mocked.
"""

from __future__ import annotations

import getpass
import json
import signal
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tanji.broker_config import ACCOUNTING_USER, check_password, hash_password
from tanji.cli import main as tanji
from tanji.wire import encode_batch, readings_topic
from tests.services import Process, free_port, require_binary

REPO = Path(__file__).resolve().parents[2]
SITE = "two-gw"
SITE_YAML = f"""
site: {{id: {SITE}, province: Chongqing}}
gateways:
  - id: gw-a
    meters: [{{id: incomer, role: grid_import, profile: eastron-sdm630, host: 127.0.0.1, poll_period_s: 1}}]
  - id: gw-b
    meters: [{{id: roof-pv, role: pv, profile: eastron-sdm630, host: 127.0.0.1, poll_period_s: 1}}]
"""
TIMEOUT_S = 10


@dataclass
class Broker:
    port: int
    conf_dir: Path
    process: Process
    tls_ca: Path | None = None

    def password(self, user: str) -> str:
        return (self.conf_dir / "secrets" / f"{user}.password").read_text()


def write_site(tmp_path: Path, text: str = SITE_YAML) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def generate(site: Path, out: Path, *extra: str) -> None:
    assert tanji(["broker-config", str(site), "--out", str(out), *extra]) == 0


def start_broker(tmp_path: Path, *, tls: bool) -> Broker:
    """Generate the site's broker config on a free port and start mosquitto with it."""
    port = free_port()
    data = tmp_path / "mosquitto-data"
    data.mkdir()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--data-dir", str(data),
            # pytest's temporary directories are private to the user running the tests.
            "--run-as", getpass.getuser()]
    ca = None
    if tls:
        certs = tmp_path / "certs"
        subprocess.run([str(REPO / "docker" / "make-certs.sh"), str(certs)], check=True, capture_output=True)
        args += ["--certs-dir", str(certs)]
        ca = certs / "ca.crt"
    else:
        args.append("--no-tls")
    out = tmp_path / "broker"
    generate(write_site(tmp_path), out, *args)
    process = Process([require_binary("mosquitto", "mosquitto"), "-c", str(out / "mosquitto.conf")],
                      port, tmp_path / "mosquitto.log")
    process.start()
    return Broker(port, out, process, ca)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = start_broker(tmp_path, tls=False)
    yield b
    b.process.stop()


@dataclass
class Client:
    """A paho client whose CONNACK, SUBACK, PUBACK and messages are waited for, not slept for."""

    mqtt: mqtt.Client
    connack: list[mqtt.ReasonCode] = field(default_factory=list)
    suback: list[mqtt.ReasonCode] = field(default_factory=list)
    puback: dict[int, mqtt.ReasonCode] = field(default_factory=dict)
    messages: list[mqtt.MQTTMessage] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, done: Callable[[], bool], what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(done, TIMEOUT_S), f"timed out waiting for {what}"

    def stop(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


def connect(broker: Broker, user: str | None, password: str | None, client_id: str) -> Client:
    """Connect with MQTT 5 (its PUBACK says *why* a publish was dropped) and wait for CONNACK."""
    c = Client(mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5))

    def record(target: Callable[..., None]) -> Callable[..., None]:
        def callback(*args: object) -> None:
            with c.changed:
                target(*args)
                c.changed.notify_all()
        return callback

    c.mqtt.on_connect = record(lambda _c, _u, _f, rc, _p: c.connack.append(rc))
    c.mqtt.on_subscribe = record(lambda _c, _u, _mid, rcs, _p: c.suback.extend(rcs))
    c.mqtt.on_publish = record(lambda _c, _u, mid, rc, _p: c.puback.__setitem__(mid, rc))
    c.mqtt.on_message = record(lambda _c, _u, msg: c.messages.append(msg))
    if user is not None:
        c.mqtt.username_pw_set(user, password)
    if broker.tls_ca is not None:
        c.mqtt.tls_set(ca_certs=str(broker.tls_ca))
    c.mqtt.connect("localhost" if broker.tls_ca else "127.0.0.1", broker.port)
    c.mqtt.loop_start()
    c.wait(lambda: bool(c.connack), "CONNACK")
    return c


def refused(broker: Broker, user: str | None, password: str | None) -> str:
    """The CONNACK reason the broker gives these credentials ("Success" when it accepts them)."""
    c = connect(broker, user, password, f"probe-{user}")
    c.mqtt.loop_stop()
    return str(c.connack[0])


def publish_all(client: Client, messages: list[tuple[str, bytes]]) -> list[mqtt.ReasonCode]:
    """Publish at QoS 1 in order and wait for every PUBACK: once it is back, Mosquitto has
    already routed the message, so everything published earlier is queued for subscribers."""
    mids = [client.mqtt.publish(topic, payload, qos=1).mid for topic, payload in messages]
    client.wait(lambda: all(m in client.puback for m in mids), "PUBACKs")
    return [client.puback[m] for m in mids]


def batch(gateway_in_payload: str, seq: int) -> bytes:
    reading = {"meter": "incomer", "ts_ms": 1_700_000_000_000 + seq, "quality": "good",
               "values": {"energy_kwh": float(seq)}}
    return encode_batch(SITE, gateway_in_payload, seq, [reading])


def test_hash_is_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.touch()
    subprocess.run([require_binary("mosquitto_passwd", "mosquitto"), "-b", str(passwd), "u", "s3cret"],
                   check=True)
    theirs = passwd.read_text().strip().split(":", 1)[1]
    assert check_password("s3cret", theirs)
    assert not check_password("s3cret!", theirs)
    assert check_password("s3cret", hash_password("s3cret"))


def test_files_users_acl_and_secret_permissions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = write_site(tmp_path)
    out = tmp_path / "out"
    generate(site, out, "--no-tls")
    secrets_dir = out / "secrets"
    users = ["gw-a", "gw-b", ACCOUNTING_USER]
    first = {u: (secrets_dir / f"{u}.password").read_text() for u in users}
    for u in users:
        assert stat.S_IMODE((secrets_dir / f"{u}.password").stat().st_mode) == 0o600
        assert len(first[u]) >= 32
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    hashes = dict(line.split(":", 1) for line in (out / "passwd").read_text().splitlines())
    assert sorted(hashes) == sorted(users)
    assert all(check_password(first[u], hashes[u]) for u in users)
    rules = [line for line in (out / "acl").read_text().splitlines() if line and not line.startswith("#")]
    assert rules == [*(rule for gw in ("gw-a", "gw-b") for rule in (
                         f"user {gw}", f"topic write tanji/v1/{SITE}/{gw}/readings",
                         f"topic write tanji/v1/{SITE}/{gw}/status", f"topic read tanji/v1/{SITE}/{gw}/confirm")),
                     f"user {ACCOUNTING_USER}", f"topic read tanji/v1/{SITE}/#",
                     f"topic write tanji/v1/{SITE}/+/confirm"]
    conf = (out / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and f"acl_file {out.resolve()}/acl" in conf
    assert "use_username_as_clientid true" in conf

    # A re-run keeps every deployed password; --rotate replaces exactly the one named.
    generate(site, out, "--no-tls")
    assert {u: (secrets_dir / f"{u}.password").read_text() for u in users} == first
    generate(site, out, "--no-tls", "--rotate", "gw-b")
    after = {u: (secrets_dir / f"{u}.password").read_text() for u in users}
    assert after["gw-b"] != first["gw-b"]
    assert {u: after[u] for u in users if u != "gw-b"} == {u: first[u] for u in users if u != "gw-b"}
    assert tanji(["broker-config", str(site), "--out", str(out), "--rotate", "gw-z"]) == 2
    assert "--rotate gw-z: no such broker user" in capsys.readouterr().err


def test_a_gateway_named_like_the_accounting_user_is_refused(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    site = write_site(tmp_path, SITE_YAML.replace("id: gw-b", f"id: {ACCOUNTING_USER}"))
    assert tanji(["broker-config", str(site), "--out", str(tmp_path / "out")]) == 2
    assert "rename the gateway" in capsys.readouterr().err


def test_help_works() -> None:
    result = subprocess.run([str(REPO / ".venv" / "bin" / "tanji"), "broker-config", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--out" in result.stdout and "--rotate" in result.stdout


def test_wrong_or_missing_credentials_are_refused(broker: Broker) -> None:
    assert refused(broker, "gw-a", broker.password("gw-a")) == "Success"
    assert refused(broker, "gw-a", broker.password("gw-b")) == "Not authorized"
    assert refused(broker, "gw-a", "not-the-password") == "Not authorized"
    assert refused(broker, "gw-c", broker.password("gw-a")) == "Not authorized"
    assert refused(broker, None, None) == "Not authorized"


def test_a_gateway_cannot_publish_under_another_gateways_topic(broker: Broker) -> None:
    n_own, n_forged, n_b = 50, 20, 30
    accounting = connect(broker, ACCOUNTING_USER, broker.password(ACCOUNTING_USER), "accounting")
    # Shared subscription, as accounting instances scale out (docs/deploy.md).
    accounting.mqtt.subscribe(f"$share/tanji-accounting/tanji/v1/{SITE}/+/readings", qos=1)
    accounting.wait(lambda: bool(accounting.suback), "SUBACK")
    assert str(accounting.suback[0]) == "Granted QoS 1"
    gw_a = connect(broker, "gw-a", broker.password("gw-a"), "gw-a")
    gw_b = connect(broker, "gw-b", broker.password("gw-b"), "gw-b")
    gw_a.mqtt.subscribe(f"tanji/v1/{SITE}/#", qos=1)  # a gateway may not read the site either
    gw_a.wait(lambda: bool(gw_a.suback), "SUBACK")
    try:
        # The accounting user is read-only: even it cannot inject readings.
        assert [str(rc) for rc in publish_all(accounting, [(readings_topic(SITE, "gw-b"), batch("gw-b", 9000))])] \
            == ["Not authorized"]
        # gw-a interleaves forged batches for gw-b's topic with its own, and ends with its own.
        sequence: list[tuple[str, bytes]] = []
        for seq in range(n_own):
            if seq < n_forged:
                sequence.append((readings_topic(SITE, "gw-b"), batch("gw-b", 10_000 + seq)))
            sequence.append((readings_topic(SITE, "gw-a"), batch("gw-a", seq)))
        codes = [str(rc) for rc in publish_all(gw_a, sequence)]
        assert codes == [("Not authorized" if "/gw-b/" in topic else "Success") for topic, _ in sequence]
        assert all(str(rc) == "Success" for rc in publish_all(
            gw_b, [(readings_topic(SITE, "gw-b"), batch("gw-b", seq)) for seq in range(n_b)]))

        accounting.wait(lambda: len(accounting.messages) >= n_own + n_b, "the genuine readings")
        received: dict[str, list[int]] = {"gw-a": [], "gw-b": []}
        for msg in accounting.messages:
            body = json.loads(msg.payload)
            gateway = msg.topic.split("/")[3]
            assert body["gateway"] == gateway
            received[gateway].append(body["seq"])
        assert received == {"gw-a": list(range(n_own)), "gw-b": list(range(n_b))}
        assert gw_a.messages == []
    finally:
        for c in (accounting, gw_a, gw_b):
            c.stop()


def test_a_gateway_leaves_at_most_its_two_retained_messages_of_bounded_size(broker: Broker) -> None:
    """Issue #14 item 6: 200 x 1 MB retained under a gateway's own subtree grew Mosquitto from
    10 to 212 MB. Now only its readings and status topics are writable, and nothing above the
    wire format's size passes the broker's door."""
    gw_a = connect(broker, "gw-a", broker.password("gw-a"), "gw-a")
    big = b"x" * (1024 * 1024 - 100)
    try:
        junk = [gw_a.mqtt.publish(f"tanji/v1/{SITE}/gw-a/junk/{i}", big, qos=1, retain=True).mid for i in range(200)]
        status = gw_a.mqtt.publish(f"tanji/v1/{SITE}/gw-a/status", b'{"v":1}', qos=1, retain=True).mid
        gw_a.wait(lambda: all(m in gw_a.puback for m in [*junk, status]), "PUBACKs")
        assert {str(gw_a.puback[m]) for m in junk} == {"Not authorized"}
        assert not gw_a.puback[status].is_failure  # "No matching subscribers" yet, but retained
    finally:
        gw_a.stop()
    # Above max_packet_size the broker does not take the message at all: it drops the connection.
    oversized = connect(broker, "gw-a", broker.password("gw-a"), "gw-a")
    dropped: list[object] = []

    def on_disconnect(*args: object) -> None:
        with oversized.changed:
            dropped.append(args)
            oversized.changed.notify_all()

    oversized.mqtt.on_disconnect = on_disconnect
    oversized.mqtt.publish(f"tanji/v1/{SITE}/gw-a/status", b"y" * (3 * 1024 * 1024), qos=0, retain=True)
    oversized.wait(lambda: bool(dropped), "the broker to drop the oversized publish")
    oversized.mqtt.loop_stop()
    reader = connect(broker, ACCOUNTING_USER, broker.password(ACCOUNTING_USER), "accounting")
    try:
        reader.mqtt.subscribe(f"tanji/v1/{SITE}/#", qos=1)
        reader.wait(lambda: bool(reader.suback), "SUBACK")
        probe = connect(broker, "gw-b", broker.password("gw-b"), "gw-b")  # retained ones come first,
        publish_all(probe, [(readings_topic(SITE, "gw-b"), batch("gw-b", 1))])  # then this one
        probe.stop()
        reader.wait(lambda: any(m.topic.endswith("/gw-b/readings") for m in reader.messages), "a live message")
        retained = [(m.topic, m.payload) for m in reader.messages if m.retain]
        assert retained == [(f"tanji/v1/{SITE}/gw-a/status", b'{"v":1}')]
    finally:
        reader.stop()


def test_rotated_password_takes_over_on_reload(broker: Broker, tmp_path: Path) -> None:
    old = broker.password("gw-a")
    generate(tmp_path / "site.yaml", broker.conf_dir, "--no-tls", "--port", str(broker.port),
             "--bind", "127.0.0.1", "--data-dir", str(tmp_path / "mosquitto-data"),
             "--run-as", getpass.getuser(), "--rotate", "gw-a")
    assert broker.process.proc is not None
    broker.process.proc.send_signal(signal.SIGHUP)
    new = broker.password("gw-a")
    assert new != old
    probe = connect(broker, "gw-b", broker.password("gw-b"), "probe")  # the reload is done once
    probe.stop()                                                       # the broker answers again
    assert refused(broker, "gw-a", old) == "Not authorized"
    assert refused(broker, "gw-a", new) == "Success"
    assert refused(broker, "gw-b", broker.password("gw-b")) == "Success"


def test_tls_listener_with_make_certs(tmp_path: Path) -> None:
    b = start_broker(tmp_path, tls=True)
    try:
        assert refused(b, "gw-a", b.password("gw-a")) == "Success"
        assert refused(b, "gw-a", "wrong") == "Not authorized"
        c = connect(b, "gw-a", b.password("gw-a"), "gw-a")
        try:
            assert [str(rc) for rc in publish_all(c, [(readings_topic(SITE, "gw-b"), batch("gw-b", 1))])] \
                == ["Not authorized"]
        finally:
            c.stop()
    finally:
        b.process.stop()
