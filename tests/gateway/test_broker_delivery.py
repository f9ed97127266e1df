"""What the broker may refuse, forget or hand to someone else, on real Mosquitto with the
configuration `tanji broker-config` generates; exact counts.

- a publish the ACL refuses (MQTT 5 PUBACK reason 135) keeps its readings in the spool and
  raises an alarm; once the ACL is fixed every reading arrives;
- nobody can take over the accounting service's session, or wipe it with a clean start, since
  client ids are bound to broker users;
- the accounting client id is stable across restarts (persisted), and its session outlives
  the broker's restart (session expiry), so the queue it holds is delivered, not abandoned;
- Mosquitto killed (SIGKILL, between autosaves) while accounting is down: nothing is lost,
  because gateways keep every batch until accounting confirms it stored it.
"""

from __future__ import annotations

import getpass
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from accounting.ingest.subscriber import MqttSubscriber, default_client_id
from gateway.service import GatewayService
from simulators.plant import PlantSimulator
from tanji.broker_config import ACCOUNTING_USER
from tanji.cli import main as tanji
from tanji.site import load_site
from tanji.wire import encode_batch, readings_topic
from tests.gateway.conftest import REPO, Collector, write_site
from tests.gateway.test_end_to_end import spool_keys
from tests.services import Process, free_port, require_binary

GATEWAY = "gw-1"


class GeneratedBroker:
    """Mosquitto running the configuration `tanji broker-config` writes for a site file."""

    def __init__(self, tmp_path: Path, site_file: Path, port: int) -> None:
        self.port = port
        self.out = tmp_path / "broker"
        self.data = tmp_path / "mosquitto-data"
        self.data.mkdir(exist_ok=True)
        assert tanji(["broker-config", str(site_file), "--out", str(self.out), "--no-tls", "--port", str(port),
                      "--bind", "127.0.0.1", "--data-dir", str(self.data), "--run-as", getpass.getuser()]) == 0
        self.process = Process([require_binary("mosquitto", "mosquitto"), "-c", str(self.out / "mosquitto.conf")],
                               port, tmp_path / "mosquitto.log")
        self.host = "127.0.0.1"

    def password(self, user: str) -> str:
        return (self.out / "secrets" / f"{user}.password").read_text()

    def reload(self) -> None:
        assert self.process.proc is not None
        self.process.proc.send_signal(signal.SIGHUP)


def authenticated_site(tmp_path: Path, meters: list[dict[str, Any]], **gateway: Any) -> tuple[Path, int]:
    """A site file whose broker section logs the gateway in as itself (`tanji broker-config` users)."""
    port = free_port()
    path = write_site(tmp_path, meters, port, **gateway)
    doc = yaml.safe_load(path.read_text())
    doc["broker"].update({"username": "{gateway}", "password_file": str(tmp_path / "broker" / "secrets" /
                                                                         "{gateway}.password")})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, port


def _meters(port: int, period_s: float = 0.1) -> list[dict[str, Any]]:
    common = {"host": "127.0.0.1", "port": port, "poll_period_s": period_s, "timeout_s": 0.5}
    return [{"id": "incomer", "profile": "eastron-sdm630", "unit_id": 1, **common},
            {"id": "line-a-meter", "profile": "eastron-sdm630", "unit_id": 2, **common}]


def _accounting_reader(broker: GeneratedBroker) -> Collector:
    return Collector(broker.host, broker.port, topic=f"tanji/v1/test-site/{GATEWAY}/readings",
                     setup=lambda c: c.username_pw_set(ACCOUNTING_USER, broker.password(ACCOUNTING_USER)))


@pytest.mark.timeout(120)
def test_a_publish_the_acl_refuses_stays_in_the_spool_until_the_acl_is_fixed(tmp_path):
    site_file, port = authenticated_site(tmp_path, _meters(free_port()))
    broker = GeneratedBroker(tmp_path, site_file, port)
    good_acl = (broker.out / "acl").read_text()
    # The installer's mistake: the gateway may publish its status but not its readings.
    (broker.out / "acl").write_text(good_acl.replace(f"topic write tanji/v1/test-site/{GATEWAY}/readings\n", ""))
    broker.process.start()
    site = load_site(site_file)
    plant = PlantSimulator.from_site(site, seed=0)
    plant.start()
    reader = _accounting_reader(broker)
    spool = tmp_path / "spool.sqlite"
    service = GatewayService(site, spool_path=spool, status_interval_s=0.5)
    try:
        service.start()
        reader.wait_for(lambda: service.health()["publish_refused"] >= 3, 30)
        health = service.health()
        assert health["publish_refused_alarm"] and "authorized" in health["publish_refused_alarm"].lower()
        assert health["acked_readings"] == 0 and health["spool_depth"] >= health["polls"] - 2
        assert reader.readings() == [], "nothing got through"
        (broker.out / "acl").write_text(good_acl)
        broker.reload()
        reader.wait_for(lambda: service.health()["publish_refused_alarm"] is None
                        and service.health()["acked_readings"] > health["polls"], 60)
    finally:
        service.stop()
        plant.stop()
    final = service.final_health
    received = {(r["meter"], r["ts_ms"]) for r in reader.readings()}
    left = spool_keys(spool)
    assert not received & left
    assert len(received) + len(left) == final["polls"], "every reading polled is delivered or still spooled"
    assert len(left) < final["polls"] / 10  # only what was polled after the last publish
    reader.stop()
    broker.process.stop()


def _v5_session(broker: GeneratedBroker, user: str, client_id: str, *, clean_start: bool,
                subscribe: str | None = None) -> tuple[mqtt.Client, list[bytes]]:
    received: list[bytes] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, broker.password(user))
    client.on_message = lambda c, u, m: received.append(m.payload)
    if subscribe:
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(subscribe, qos=1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect(broker.host, broker.port, clean_start=clean_start, properties=props)
    client.loop_start()
    return client, received


def _wait(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_no_gateway_can_take_over_or_wipe_the_accounting_session(tmp_path):
    site_file, port = authenticated_site(tmp_path, _meters(free_port()))
    broker = GeneratedBroker(tmp_path, site_file, port)
    broker.process.start()
    topic = readings_topic("test-site", GATEWAY)
    try:
        accounting, _ = _v5_session(broker, ACCOUNTING_USER, "tanji-accounting-solo-1", clean_start=False,
                                    subscribe="tanji/v1/test-site/+/readings")
        time.sleep(0.5)
        accounting.disconnect()
        accounting.loop_stop()
        gateway, _ = _v5_session(broker, GATEWAY, GATEWAY, clean_start=False)
        for seq in range(30):
            gateway.publish(topic, encode_batch("test-site", GATEWAY, seq, []), qos=1).wait_for_publish(5)
        # The gateway's credentials asking for accounting's client id, with a clean start (which,
        # under that id, would take the session over and discard its 30 queued messages).
        impostor, _ = _v5_session(broker, GATEWAY, "tanji-accounting-solo-1", clean_start=True)
        time.sleep(0.5)
        impostor.disconnect()
        impostor.loop_stop()
        accounting, received = _v5_session(broker, ACCOUNTING_USER, "tanji-accounting-solo-1", clean_start=False)
        _wait(lambda: len(received) >= 30)
        time.sleep(0.3)
        assert len(received) == 30, "the queue held for accounting survived the impostor"
        for c in (accounting, gateway):
            c.disconnect()
            c.loop_stop()
    finally:
        broker.process.stop()


@pytest.mark.timeout(90)
def test_accounting_keeps_its_session_across_its_and_the_brokers_restart(tmp_path):
    """The default client id is persisted in the state directory, the session expires only after
    days: the queue held while accounting was away is delivered after its restart and the
    broker's. (A random id per start abandoned it: 94 batches lost in one restart.)"""
    site_file, port = authenticated_site(tmp_path, _meters(free_port()))
    broker = GeneratedBroker(tmp_path, site_file, port)
    broker.process.start()
    state = tmp_path / "state"
    first_id = default_client_id(state)
    assert default_client_id(state) == first_id and (state / "mqtt-client-id").read_text().strip() == first_id
    from accounting.service import AccountingService
    from accounting.store.checkpoints import CheckpointStore
    from accounting.store.sqlite import SqliteStore
    service = AccountingService([load_site(site_file)], SqliteStore(tmp_path / "t.sqlite"),
                                checkpoints=CheckpointStore(state / "checkpoints.sqlite"))  # never started
    assert service.client_id == first_id, "the service's default client id is the persisted one"
    topics = ["tanji/v1/test-site/+/readings"]
    login = {"username": ACCOUNTING_USER, "password": broker.password(ACCOUNTING_USER)}
    sub = MqttSubscriber(broker.host, broker.port, default_client_id(state), topics, **login)
    sub.start()
    assert sub.connected.wait(10)
    time.sleep(0.5)
    sub.stop()
    gateway, _ = _v5_session(broker, GATEWAY, GATEWAY, clean_start=False)
    for seq in range(94):
        gateway.publish(readings_topic("test-site", GATEWAY), encode_batch("test-site", GATEWAY, seq, []),
                        qos=1).wait_for_publish(5)
    gateway.disconnect()
    gateway.loop_stop()
    broker.process.stop()   # a clean broker restart: the queue is kept while the session has not expired
    broker.process.start()
    again = MqttSubscriber(broker.host, broker.port, default_client_id(state), topics, **login)
    again.start()
    try:
        seqs: list[int] = []
        deadline = time.monotonic() + 20
        while len(seqs) < 94 and time.monotonic() < deadline:
            try:
                message = again.inbox.get(timeout=0.5)
            except Exception:  # noqa: BLE001 - queue.Empty
                continue
            seqs.append(int(message.payload.split(b'"seq":')[1].split(b",")[0]))
            again.ack([message])
        assert sorted(seqs) == list(range(94))
    finally:
        again.stop()
        broker.process.stop()


def _stored(db: Path) -> set[tuple[str, int]]:
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return set(conn.execute("SELECT meter, ts_ms FROM readings"))
    except sqlite3.OperationalError:
        return set()


def _accounting(site_file: Path, broker: GeneratedBroker, db: Path, state: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tanji", "--log-level", "WARNING", "accounting", "--config", str(site_file),
           "--broker", f"{broker.host}:{broker.port}", "--store", f"sqlite:{db}", "--state-dir", str(state),
           "--broker-username", ACCOUNTING_USER, "--broker-password-file",
           str(broker.out / "secrets" / f"{ACCOUNTING_USER}.password")]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mosquitto_killed_while_accounting_is_down_loses_nothing(tmp_path):
    site_file, port = authenticated_site(tmp_path, _meters(free_port()), delivery="confirmed")
    broker = GeneratedBroker(tmp_path, site_file, port)
    broker.process.start()
    site = load_site(site_file)
    plant = PlantSimulator.from_site(site, seed=0)
    plant.start()
    db, state, spool = tmp_path / "tanji.sqlite", tmp_path / "state", tmp_path / "spool.sqlite"
    accounting = _accounting(site_file, broker, db, state, tmp_path / "accounting.log")
    service = GatewayService(site, spool_path=spool, status_interval_s=0.5, confirm_grace_s=2.0)
    try:
        service.start()
        _wait(lambda: service.health()["confirmed_readings"] > 50, 120)
        os.killpg(accounting.pid, signal.SIGKILL)
        accounting.wait()
        at_kill = len(_stored(db))
        _wait(lambda: service.health()["acked_readings"] - service.health()["confirmed_readings"] > 200, 60)
        broker.process.kill()      # SIGKILL: what it acknowledged since its last autosave is gone
        time.sleep(1.0)
        broker.process.start()
        accounting = _accounting(site_file, broker, db, state, tmp_path / "accounting.log")
        _wait(lambda: len(_stored(db)) > at_kill + 200, 120)
        _wait(lambda: service.health()["awaiting_confirmation"] <= 2 and service.health()["republished_batches"] > 0,
              120)
    finally:
        service.stop()
        plant.stop()
    final = service.final_health
    time.sleep(2.0)  # confirmations in flight at the stop have been stored by now
    os.killpg(accounting.pid, signal.SIGTERM)
    accounting.wait(30)
    broker.process.stop()
    stored, left = _stored(db), spool_keys(spool)
    assert len(stored | left) == final["polls"], "every polled reading is stored, or still in the spool"
    assert len(left - stored) < final["polls"] / 20, "only the last moments before the stop wait in the spool"
