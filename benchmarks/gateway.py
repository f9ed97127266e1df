"""Gateway benchmark: poll rate, requests per poll, memory with 200 meters, spool rates.

Runs the real gateway (`tanji gateway --config`, a subprocess) against a minimal Modbus TCP
server in another subprocess (it answers every read with SDM630 registers encoded from the
profile, so the server is never the bottleneck) and a real Mosquitto. Prints progress lines,
then as its LAST line one JSON object:

- ``polls_per_s``: SDM630 polls per second the gateway process sustains over TCP, every poll
  decoded, spooled (SQLite) and published (MQTT QoS 1) — 100 meters each asking for a poll
  every 10 ms (10,000/s offered, more than one process can take); goal >= 2,000;
- ``requests_per_poll`` and ``naive_requests_per_poll``: Modbus requests per SDM630 poll with
  the read plan, and one request per register (the way ThingsBoard's gateway reads), and
  ``request_reduction`` their ratio; goal >= 5;
- ``rss_mb_200_meters``: resident memory of the gateway polling 200 meters every second;
  goal <= 60;
- ``spool_write_readings_per_s``: SDM630 readings committed to the spool (one transaction per
  100, as under load), and ``spool_replay_readings_per_s``: readings taken out again in
  batches of 500, encoded as wire-format payloads and acknowledged;
- ``cpu_ms_per_1000_readings_signed`` against ``cpu_ms_per_1000_readings_unsigned``: gateway
  process CPU per 1,000 SDM630 readings spooled, formed into batches of 100, signed and chained
  (Ed25519, docs/audit.md) or not, and encoded for publishing, and ``signing_cpu_overhead``;
- ``backlog_drain_readings_per_s``: a gateway started on a spool holding a 50,000-reading
  backlog, publishing it to Mosquitto until it is acknowledged (``delivery: broker``);
- ``serial_server_polls_per_s``: 100 SDM630s behind one serial device server (the plant
  simulator in transparent mode, RTU frames over TCP, every exchange taking its 9,600 baud
  wire time), polled one request at a time over one connection, with
  ``serial_server_bus_max_polls_per_s``, the line's theoretical maximum for those frames
  (request + answer bytes + 2 × 3.5 characters of silence, 10 bits a character), and their ratio;
- ``dlt645_polls_per_s``: 100 DL/T 645-2007 meters (20 data identifiers a poll, one frame
  each) behind one device server without wire timing: what the gateway and the simulator
  manage, and ``dlt645_9600_polls_per_s`` against ``dlt645_bus_max_polls_per_s`` at 9,600 baud;
- ``side_by_side``: Tanji's gateway and the ThingsBoard IoT Gateway 3.8 (its own venv under a
  cache dir, benchmarks/peer_thingsboard.py), one after the other, on the same counting Modbus
  server and Mosquitto (``--peer-meters`` SDM630s every ``--peer-period`` s): per gateway
  ``readings_per_s``, ``cpu_s_per_1000_readings``, ``rss_mb``; across a ``--outage-s`` broker
  outage ``outage_readings_delivered`` and ``backlog_after_outage_s``; across the outage and a
  SIGKILL ``lost`` = polls the meters answered − distinct readings at the broker, exactly;
  ``tanji_ahead_on`` lists the figures where Tanji's is the better (see `side_by_side`);
- ``machine``: the machine's baseline measured in the same run (benchmarks/machine.py).

Usage: ``.venv/bin/python benchmarks/gateway.py [--seconds 10] [--quick] [--peers tanji,thingsboard]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import peer_thingsboard  # noqa: E402
from benchmarks.machine import machine_baseline  # noqa: E402
from gateway.read_plan import naive_request_count, plan_for_profile  # noqa: E402
from gateway.service import encode_batch_body, status_file  # noqa: E402
from gateway.spool import Spool  # noqa: E402
from tanji.codec import encode  # noqa: E402
from tanji.profile import load_profiles  # noqa: E402
from tanji.wire import Reading, readings_topic  # noqa: E402
from tests.services import MosquittoServer, free_port, wait_for_port  # noqa: E402

SDM630 = load_profiles()["eastron-sdm630"]


def serve(port: int, counts: Path | None = None) -> None:
    """Server mode (in the subprocess): every unit id answers reads with the same SDM630 registers.

    With `counts`, every answered request is counted by (unit id, first address) into that JSON
    file (refreshed every 0.2 s, and last at SIGTERM): the polls the meters really answered,
    which the side-by-side run compares with the readings that reached the broker.
    """
    words = [0] * 80
    for reg in SDM630.registers:
        words[reg.address:reg.end] = encode(230.0 if "voltage" in reg.name else 12.5, reg.data_type, reg.order)
    answered: Counter[str] = Counter()
    silent = [False]  # SIGUSR1 toggles: the meters stop answering (requests time out) and start again

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                fc, address, count = struct.unpack(">BHH", (await reader.readexactly(length - 1))[:5])
                if silent[0]:
                    continue
                body = struct.pack(f">BB{count}H", fc, 2 * count, *words[address:address + count])
                writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
                answered[f"{unit}:{address}"] += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def dump() -> None:
        if counts is not None:
            tmp = counts.with_suffix(".tmp")
            tmp.write_text(json.dumps(answered))
            os.replace(tmp, counts)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, lambda: silent.__setitem__(0, not silent[0]))
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
            dump()
        server.close()
        dump()

    asyncio.run(main())


def site_file(workdir: Path, meters: int, period_s: float, modbus_port: int, broker_port: int) -> Path:
    doc = {
        "site": {"id": "bench", "province": "Chongqing"},
        "broker": {"host": "127.0.0.1", "port": broker_port},
        # One Modbus TCP gateway address for every meter: one connection, requests matched by
        # transaction id, 32 at a time (a serial device server would take one: see below).
        "gateways": [{"id": "gw-bench", "spool_path": str(workdir / "spool.sqlite"), "delivery": "broker",
                      "endpoints": [{"id": "mtcp", "host": "127.0.0.1", "port": modbus_port, "framing": "tcp",
                                     "max_in_flight": 32, "timeout_s": 2.0}],
                      "meters": [
            {"id": f"m{i:03d}", "role": "grid_import" if i == 0 else "submeter", "cost_centre": "c",
             "profile": "eastron-sdm630", "endpoint": "mtcp", "unit_id": 1 + i % 247,
             "poll_period_s": period_s, "timeout_s": 2.0} for i in range(meters)]}],
        "cost_centres": [{"id": "c", "kind": "production"}],
    }
    path = workdir / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run_gateway(site: Path, spool: Path, seconds: float) -> tuple[dict, float, float]:
    """Run `tanji gateway` for `seconds` after a warm-up; returns (final health, polls/s, RSS MB)."""
    proc = subprocess.Popen([sys.executable, "-m", "tanji", "--log-level", "WARNING", "gateway", "--config",
                             str(site), "--spool", str(spool)], cwd=REPO)
    try:
        time.sleep(3.0)  # connections up, imports done
        polls0, ts0 = _polls(spool)
        time.sleep(seconds)
        polls1, ts1 = _polls(spool)
        rate = (polls1 - polls0) / ((ts1 - ts0) / 1000)
        rss_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.terminate()
        proc.wait(30)
    return json.loads(status_file(spool).read_text()), rate, rss_mb


def _polls(spool: Path) -> tuple[int, int]:
    """(polls so far, when), from the status file the gateway refreshes (waits for a fresh one)."""
    path = status_file(spool)
    before = path.stat().st_mtime_ns if path.exists() else 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime_ns != before:
            try:
                status = json.loads(path.read_text())
                return status["polls"], status["ts_ms"]
            except (ValueError, KeyError):
                pass
        time.sleep(0.01)
    raise RuntimeError("the gateway stopped writing its status")


def sdm630_readings(n: int, start_ms: int) -> list[Reading]:
    values = {reg.name: 12.5 for reg in SDM630.registers}
    return [Reading(f"m{i % 100:03d}", start_ms + i, "good", values) for i in range(n)]


def spool_rates(workdir: Path, n: int = 50_000) -> tuple[float, float]:
    spool = Spool(workdir / "rates.sqlite")
    readings = sdm630_readings(n, int(time.time() * 1000) - n)
    t0 = time.perf_counter()
    for i in range(0, n, 100):
        spool.add(readings[i:i + 100])
    write = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    while (batch := spool.next_batch(500)) is not None:
        encode_batch_body("bench", "gw", batch.seq, batch.body, backlog=True, sent_ms=0)
        spool.ack(batch.seq)
    replay = n / (time.perf_counter() - t0)
    spool.close()
    return write, replay


def signing_cpu(workdir: Path, n: int = 50_000, batch: int = 100) -> tuple[float, float]:
    """Gateway CPU ms per 1,000 SDM630 readings spooled, formed into batches of `batch` and
    encoded for publishing, without and with Ed25519 signing and chaining (the same readings,
    the same code path; process CPU time, so waiting on the disk does not count)."""
    from gateway.signing_key import generate_key

    key = generate_key(workdir / "bench.key")
    out = []
    for signer in (None, key):
        spool = Spool(workdir / f"sign-{signer is not None}.sqlite", signer=signer, site="bench", gateway="gw")
        readings = sdm630_readings(n, int(time.time() * 1000) - n)
        t0 = time.process_time()
        for i in range(0, n, batch):
            spool.add(readings[i:i + batch])
            b = spool.next_batch(batch)
            encode_batch_body("bench", "gw", b.seq, b.body, backlog=False, sent_ms=0, sig=b.sig)
            spool.ack(b.seq)
        out.append((time.process_time() - t0) * 1000 / (n / 1000))
        spool.close()
    return out[0], out[1]


def backlog_drain(workdir: Path, broker: MosquittoServer, modbus_port: int, n: int = 50_000,
                  confirmed: bool = False) -> float:
    """Readings/s a gateway drains from a 50,000-reading backlog until its spool is empty.

    `confirmed`: with end-to-end delivery, a reading leaves the spool only when accounting's
    confirmation arrives; accounting's own MQTT subscriber (its real ack-and-confirm code)
    confirms each batch as soon as it has it (no store write: that cost is accounting's, the
    same either way), so the difference to the plain drain is the gateway's cost of waiting
    for confirmations and the confirm messages on the broker.
    """
    spool_path = workdir / f"drain-{'confirmed' if confirmed else 'broker'}.sqlite"
    spool = Spool(spool_path)
    readings = sdm630_readings(n, int(time.time() * 1000) - 10 * n)
    for i in range(0, n, 1000):
        spool.add(readings[i:i + 1000])
    spool.close()
    site = site_file(workdir, 2, 60.0, modbus_port, broker.port)
    if confirmed:
        site.write_text(site.read_text().replace("delivery: broker", "delivery: confirmed"))
    confirmer = _Confirmer(broker) if confirmed else None
    proc = subprocess.Popen([sys.executable, "-m", "tanji", "--log-level", "WARNING", "gateway", "--config",
                             str(site), "--spool", str(spool_path)], cwd=REPO)
    try:
        t0 = time.monotonic()
        while proc.poll() is None:
            time.sleep(0.2)
            left = Spool(spool_path)
            depth = left.depth
            left.close()
            if depth <= 2:
                return n / (time.monotonic() - t0)
        raise RuntimeError(f"the gateway exited with code {proc.returncode} before draining its backlog")
    finally:
        proc.terminate()
        proc.wait(30)
        if confirmer is not None:
            confirmer.stop()


class _Confirmer:
    """Accounting's MqttSubscriber acking (and so confirming) every batch the moment it arrives."""

    def __init__(self, broker: MosquittoServer) -> None:
        import threading

        from accounting.ingest.subscriber import MqttSubscriber
        self.sub = MqttSubscriber(broker.host, broker.port, "bench-confirmer", ["tanji/v1/bench/+/readings"])
        self.sub.start()
        self.sub.connected.wait(10)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import queue
        while not self._stop.is_set():
            try:
                batch = [self.sub.inbox.get(timeout=0.1)]
            except queue.Empty:
                continue
            while len(batch) < 500:
                try:
                    batch.append(self.sub.inbox.get_nowait())
                except queue.Empty:
                    break
            self.sub.ack(batch)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sub.stop()


class _Arrivals:
    """Readings reaching the broker, by (meter, timestamp), for either gateway's topics.

    A persistent session (QoS 1, fixed client id), so what the broker holds for it across its
    own restart still arrives. `first` maps every distinct reading to when it first arrived.
    """

    def __init__(self, broker: MosquittoServer, client_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.first: dict[tuple[str, int], float] = {}
        self.duplicates = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda client, *a: client.subscribe(
            [(readings_topic("+", "+"), 1), (peer_thingsboard.TELEMETRY_TOPIC, 1)])
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001 (paho's callback)
        now = time.monotonic()
        body = json.loads(message.payload)
        if message.topic == peer_thingsboard.TELEMETRY_TOPIC:  # {"device": [{"ts": ms, "values": {}}]}
            keys = [(device, entry["ts"]) for device, entries in body.items() for entry in entries]
        else:  # Tanji's wire format
            keys = [(r["meter"], r["ts_ms"]) for r in body["readings"] if r["values"]]  # not comm_error
        with self.lock:
            for key in keys:
                if key in self.first:
                    self.duplicates += 1
                else:
                    self.first[key] = now

    def count(self, before_ms: float | None = None) -> int:
        with self.lock:
            if before_ms is None:
                return len(self.first)
            return sum(1 for _, ts in self.first if ts < before_ms)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    return [proc, *proc.children(recursive=True)]


def _cpu_s(proc: psutil.Process) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in _tree(proc))


def _wait(condition: Callable[[], bool], limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _wait_still(count: Callable[[], int], still_s: float, limit_s: float) -> None:
    """Until `count()` has not changed for `still_s` (at most `limit_s`)."""
    deadline = time.monotonic() + limit_s
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < still_s:
        time.sleep(0.2)
        now = count()
        if now != last:
            last, since = now, time.monotonic()


def side_by_side(kind: str, work: Path, broker: MosquittoServer, meters: int, period_s: float, seconds: float,
                 outage_s: float, after_kill_s: float) -> dict[str, float | int]:
    """One gateway (`tanji` or `thingsboard`) polling `meters` SDM630s every `period_s` through
    the counting Modbus server into `broker`: readings/s, CPU s per 1,000 readings and RSS over
    `seconds`; then the broker down for `outage_s` and back (how long until every reading
    taken before it returned has arrived); then SIGKILL and a restart; then the meters stop
    answering and, once nothing more arrives, `lost` = polls the meters answered − distinct
    readings at the broker, exactly.

    The meters stop answering a second before the SIGKILL: with no poll in flight, every
    reading counted lost is one the gateway had taken. (A kill mid-polling also "loses" the
    answers to requests still in flight, which the server counts and the dead gateway never
    read: measured that way, Tanji's gateway with 20 meters in flight lost exactly 20.)"""
    work.mkdir(parents=True)
    port = free_port()
    counts = work / "answered.json"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--counts", str(counts)])
    arrivals = _Arrivals(broker, f"bench-arrivals-{kind}")
    platform = None
    if kind == "tanji":
        site = site_file(work, meters, period_s, port, broker.port)
        last_address = plan_for_profile(SDM630)[-1].address

        def start() -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-m", "tanji", "--log-level", "WARNING", "gateway", "--config",
                                     str(site), "--spool", str(work / "spool.sqlite")], cwd=REPO)
    else:
        platform = peer_thingsboard.PlatformStandIn(broker.host, broker.port)
        config = peer_thingsboard.write_config(work, broker.port, port, SDM630,
                                               [(f"m{i:03d}", 1 + i % 247) for i in range(meters)], period_s)
        script = peer_thingsboard.ensure_installed()
        last_address = peer_thingsboard.last_address(SDM630)

        def start() -> subprocess.Popen:
            return peer_thingsboard.start(script, config, work, work / "gateway.log")
    proc = None
    try:
        wait_for_port(port)
        proc = start()
        if not _wait(lambda: arrivals.count() > 0, 120):
            raise RuntimeError(f"{kind}: no reading reached the broker in 120 s")
        time.sleep(2.0)
        ps = psutil.Process(proc.pid)
        cpu0, n0, t0 = _cpu_s(ps), arrivals.count(), time.monotonic()
        time.sleep(seconds)
        cpu1, n1, t1 = _cpu_s(ps), arrivals.count(), time.monotonic()
        rss_mb = sum(p.memory_info().rss for p in _tree(ps)) / 2**20

        down_ms = time.time() * 1000
        broker.stop()
        time.sleep(outage_s)
        broker.start()
        back, back_ms = time.monotonic(), time.time() * 1000
        # back in business: a reading taken after the broker returned has arrived (the gateway has
        # reconnected, whatever its backoff), and the older ones have stopped coming
        _wait(lambda: arrivals.count() > arrivals.count(back_ms), 300)
        _wait_still(lambda: arrivals.count(back_ms), 3.0, 300)
        with arrivals.lock:
            late = [at for (_, ts), at in arrivals.first.items() if ts < back_ms and at > back]
            during = sum(1 for _, ts in arrivals.first if down_ms <= ts < back_ms)
        backlog_s = max(late) - back if late else None

        server.send_signal(signal.SIGUSR1)  # silent: what is in flight times out unanswered
        time.sleep(1.0)
        proc.kill()
        proc.wait(30)
        time.sleep(1.0)
        proc = start()
        server.send_signal(signal.SIGUSR1)
        n_kill = arrivals.count()
        _wait(lambda: arrivals.count() > n_kill, 120)
        time.sleep(after_kill_s)

        server.terminate()  # the meters stop answering; their final counts are written
        server.wait(30)
        _wait_still(arrivals.count, 5.0, 300)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if server.poll() is None:
            server.terminate()
            server.wait(30)
        arrivals.stop()
        if platform is not None:
            platform.stop()
    left = peer_thingsboard.stored_messages(work) if kind == "thingsboard" else Spool(work / "spool.sqlite").depth
    answered = json.loads(counts.read_text())
    polled = sum(answered.get(f"{1 + i % 247}:{last_address}", 0) for i in range(meters))
    received = arrivals.count()
    readings = n1 - n0
    return {
        "readings_per_s": round(readings / (t1 - t0), 1),
        "cpu_s_per_1000_readings": round((cpu1 - cpu0) / readings * 1000, 3) if readings else None,
        "rss_mb": round(rss_mb, 1),
        "outage_readings_delivered": during,  # taken while the broker was down, delivered after
        "backlog_after_outage_s": round(backlog_s, 2) if backlog_s is not None else None,
        "readings_polled": polled,
        "readings_received": received,
        "lost": polled - received,
        "duplicates": arrivals.duplicates,
        "left_in_storage": left,  # spool rows (Tanji) or storage messages (ThingsBoard) never delivered
    }


def serial_server_site(workdir: Path, profile: str, meters: int, port: int, broker_port: int,
                       baudrate: int | None) -> Path:
    """`meters` meters of `profile` behind one device server (framing rtu) at 127.0.0.1:port."""
    dlt = profile == "dlt645-2007"
    doc = {
        "site": {"id": "bench", "province": "Chongqing"},
        "broker": {"host": "127.0.0.1", "port": broker_port},
        "gateways": [{"id": "gw-bench", "spool_path": str(workdir / "spool.sqlite"), "delivery": "broker",
                      "endpoints": [{"id": "sds", "host": "127.0.0.1", "port": port, "framing": "rtu",
                                     "timeout_s": 5.0, **({"baudrate": baudrate} if baudrate else {})}],
                      "meters": [{"id": f"m{i:03d}", "role": "grid_import" if i == 0 else "submeter",
                                  "cost_centre": "c", "profile": profile, "endpoint": "sds", "poll_period_s": 0.05,
                                  "ct_ratio": 200,  # behind CTs: the meters show secondary values
                                  "timeout_s": 5.0, **({"address": f"{i + 1:012d}"} if dlt else {"unit_id": i + 1})}
                                 for i in range(meters)]}],
        "cost_centres": [{"id": "c", "kind": "production"}],
    }
    path = workdir / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def bus_max_polls_per_s(profile_name: str, baudrate: int) -> float:
    """The line's ceiling: every exchange of one poll, bytes and 2 × 3.5 characters of silence, 8N1."""
    from simulators.serial_server import char_time_s
    from tanji import dlt645
    from tanji import modbus_frames as mf

    profile = load_profiles()[profile_name]
    chars = 0
    if profile.protocol == "dlt645":
        for reg in profile.registers:
            size = dlt645.FORMATS[reg.data_type][0]
            answer = dlt645.read_response("000000000001", reg.di, bytes(size))
            chars += len(dlt645.read_request("000000000001", reg.di)) + len(answer) + 7
    else:
        for req in plan_for_profile(profile):
            chars += len(mf.rtu_read_request(1, req.function_code, req.address, req.count)) \
                + len(mf.rtu_answer(1, req.function_code, [0] * req.count)) + 7
    return 1 / (chars * char_time_s(baudrate))


def serial_server_rate(work: Path, broker: MosquittoServer, profile: str, baudrate: int | None,
                       seconds: float, meters: int = 100) -> float:
    """Polls/s of one gateway process reading `meters` meters through one simulated device server."""
    from simulators.plant import PlantSimulator
    from tanji.site import load_site

    work.mkdir()
    site_path = serial_server_site(work, profile, meters, free_port(), broker.port, baudrate)
    plant = PlantSimulator.from_site(load_site(site_path), seed=0)
    plant.start()
    try:
        _, rate, _ = run_gateway(site_path, work / "spool.sqlite", seconds)
    finally:
        plant.stop()
    return rate


def run_side_by_side(work: Path, broker: MosquittoServer, args: argparse.Namespace) -> dict:
    """Tanji's gateway and its peers, one after the other, on the same meters and broker."""
    quick = args.quick
    meters, period = (3, 0.2) if quick else (args.peer_meters, args.peer_period)
    seconds, outage, after_kill = (1.0, 2.0, 1.0) if quick else (args.seconds, args.outage_s, 5.0)
    out: dict = {"meters": meters, "poll_period_s": period, "offered_polls_per_s": round(meters / period, 1),
                 "outage_s": outage}
    for kind in args.peers.split(","):
        if kind == "thingsboard":
            if quick and not peer_thingsboard.is_installed():
                out[kind] = {"skipped": "--quick does not install the peer (minutes of pip); it is not in "
                                        f"{peer_thingsboard.cache_dir()} yet: `python benchmarks/peer_thingsboard.py`"}
                continue
            try:
                peer_thingsboard.ensure_installed()
            except peer_thingsboard.PeerUnavailable as exc:
                out[kind] = {"skipped": str(exc)}
                continue
            out["thingsboard_gateway_version"] = peer_thingsboard.installed_version()
        print(f"side by side: {kind}, {meters} SDM630 every {period} s, broker down {outage:g} s, SIGKILL",
              flush=True)
        out[kind] = side_by_side(kind, work / f"side-{kind}", broker, meters, period, seconds, outage, after_kill)
        print(f"  {kind}: {out[kind]}", flush=True)
    tanji, peer = out.get("tanji"), out.get("thingsboard")
    if isinstance(tanji, dict) and isinstance(peer, dict) and "skipped" not in peer:
        better = {"readings_per_s": max, "cpu_s_per_1000_readings": min, "rss_mb": min,
                  "outage_readings_delivered": max, "backlog_after_outage_s": min, "lost": min}
        out["tanji_ahead_on"] = [k for k, pick in better.items()
                                 if tanji[k] is not None and peer[k] is not None and tanji[k] != peer[k]
                                 and pick(tanji[k], peer[k]) == tanji[k]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per run (default 10)")
    parser.add_argument("--quick", action="store_true",
                        help="the test suite's smoke test: 1 s runs, 2,000-reading backlogs, no 20 s serial runs")
    parser.add_argument("--peer-meters", type=int, default=20, help="meters in the side-by-side run (default 20)")
    parser.add_argument("--peer-period", type=float, default=0.05,
                        help="their poll period in the side-by-side run, s (default 0.05: 400 polls/s offered)")
    parser.add_argument("--outage-s", type=float, default=60.0, help="broker outage in the side-by-side run")
    parser.add_argument("--peers", default="tanji,thingsboard",
                        help="gateways of the side-by-side run (default tanji,thingsboard; '' skips it)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--counts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.counts)
        return
    if args.quick:
        args.seconds = 1.0
    backlog_n = 2_000 if args.quick else 50_000
    machine = machine_baseline()

    plan = plan_for_profile(SDM630)
    result: dict[str, float | int] = {
        "requests_per_poll": len(plan),
        "naive_requests_per_poll": naive_request_count(SDM630),
        "request_reduction": round(naive_request_count(SDM630) / len(plan), 1),
    }
    print(f"read plan: {len(plan)} request(s) per SDM630 poll instead of {naive_request_count(SDM630)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tanji-bench-gw-") as tmp:
        work = Path(tmp)
        modbus_port = free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(modbus_port)])
        broker = MosquittoServer(work / "mosquitto")
        try:
            wait_for_port(modbus_port)
            broker.start()

            (work / "rate").mkdir()
            site = site_file(work / "rate", 100, 0.01, modbus_port, broker.port)
            health, rate, _ = run_gateway(site, work / "rate" / "spool.sqlite", args.seconds)
            result["polls_per_s"] = round(rate)
            result["poll_errors"] = health["poll_errors"]
            print(f"poll rate: {rate:.0f} SDM630 polls/s (100 meters offered 10,000/s), "
                  f"errors {health['poll_errors']}", flush=True)

            (work / "rss").mkdir()
            site = site_file(work / "rss", 200, 1.0, modbus_port, broker.port)
            health, rate, rss = run_gateway(site, work / "rss" / "spool.sqlite", min(args.seconds, 5.0))
            result["rss_mb_200_meters"] = round(rss, 1)
            print(f"memory: {rss:.1f} MB RSS polling 200 meters ({rate:.0f} polls/s)", flush=True)

            write, replay = spool_rates(work, backlog_n)
            result["spool_write_readings_per_s"] = round(write)
            result["spool_replay_readings_per_s"] = round(replay)
            print(f"spool: {write:.0f} readings/s written, {replay:.0f} readings/s replayed", flush=True)

            plain, signed = signing_cpu(work, backlog_n)
            result["cpu_ms_per_1000_readings_unsigned"] = round(plain, 2)
            result["cpu_ms_per_1000_readings_signed"] = round(signed, 2)
            result["signing_cpu_overhead"] = round(signed / plain - 1, 3)
            print(f"signing: {signed:.1f} ms CPU per 1,000 readings spooled, batched by 100 and encoded signed, "
                  f"{plain:.1f} ms unsigned (+{(signed / plain - 1) * 100:.0f} %)", flush=True)

            drain = backlog_drain(work, broker, modbus_port, backlog_n)
            result["backlog_drain_readings_per_s"] = round(drain)
            print(f"backlog: {drain:.0f} readings/s drained to Mosquitto (delivery: broker)", flush=True)
            confirmed = backlog_drain(work, broker, modbus_port, backlog_n, confirmed=True)
            result["backlog_drain_confirmed_readings_per_s"] = round(confirmed)
            result["confirmed_vs_broker_drain"] = round(confirmed / drain, 3)
            print(f"backlog, delivery: confirmed: {confirmed:.0f} readings/s until accounting confirmed them "
                  f"({confirmed / drain:.0%} of the broker-only drain)", flush=True)

            # a 9,600 baud line makes a few polls a second
            bus_seconds = args.seconds if args.quick else max(args.seconds, 20.0)
            rate = serial_server_rate(work / "sds-modbus", broker, "eastron-sdm630", 9600, bus_seconds)
            ceiling = bus_max_polls_per_s("eastron-sdm630", 9600)
            result["serial_server_polls_per_s"] = round(rate, 2)
            result["serial_server_bus_max_polls_per_s"] = round(ceiling, 2)
            result["serial_server_bus_utilisation"] = round(rate / ceiling, 3)
            print(f"serial device server, 100 SDM630 at 9600 baud (RTU over TCP): {rate:.2f} polls/s, "
                  f"the line's maximum for those frames {ceiling:.2f} ({rate / ceiling:.0%})", flush=True)

            rate = serial_server_rate(work / "sds-dlt645", broker, "dlt645-2007", None, args.seconds)
            result["dlt645_polls_per_s"] = round(rate, 1)
            print(f"DL/T 645: {rate:.1f} polls/s of 100 meters behind one device server "
                  f"(20 DIs a poll, no wire timing)", flush=True)
            rate = serial_server_rate(work / "sds-dlt645-9600", broker, "dlt645-2007", 9600, bus_seconds)
            ceiling = bus_max_polls_per_s("dlt645-2007", 9600)
            result["dlt645_9600_polls_per_s"] = round(rate, 2)
            result["dlt645_bus_max_polls_per_s"] = round(ceiling, 2)
            print(f"DL/T 645 at 9600 baud: {rate:.2f} polls/s, the line's maximum {ceiling:.2f} "
                  f"({rate / ceiling:.0%})", flush=True)

            if args.peers:
                result["side_by_side"] = run_side_by_side(work, broker, args)
        finally:
            broker.stop()
            server.terminate()
            server.wait(10)
    print(json.dumps({**result, "machine": machine}))


if __name__ == "__main__":
    main()
