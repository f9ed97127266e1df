"""Ingest benchmark: fleet generator → Mosquitto → accounting → InfluxDB and engine, on this machine.

    .venv/bin/python benchmarks/ingest.py [--gateways 50 --meters 100 --rounds 200
                                           --live-rate 20000 --live-s 15]

The fleet (simulators/fleet.py) runs in a child process of its own, as gateways run on other
machines: its interpreter never competes with accounting's.

Phase 0 (the store's ceiling): the same line protocol ingest writes for the backlog (the same
readings, formatted beforehand and not timed) is written to the same influxd by a plain bulk
writer: one HTTP connection, the store's request size (10,000 lines), one request after the
other, no MQTT, no Tanji. It runs twice, before the drain and after the live phase, each into a
database of its own (counted back exactly, then dropped and influxd left to settle, so that its
cache's snapshot to TSM files, SNAPSHOT_COLD_S after its last write, does not fall inside the
drain; the second run waits out the drain's); `store_ceiling_readings_per_s` is the better of the
two and `ratio_to_store_ceiling` = `readings_per_s` / it (goal >= 0.8). After the second, the
same writer on two connections at once (`store_ceiling_two_writers_readings_per_s`,
`ratio_to_two_writer_ceiling`): one connection leaves influxd idle between a request's answer
and the next request, and on two it takes ~1.5x more here, with both cores; so the ratio's
ceiling is a single writer's, and this figure says what influxd alone could take.
Phase 1 (throughput): the fleet publishes a backlog of `rounds` polls of every meter into the
persistent session of an offline accounting instance; the instance then starts and drains it.
`readings_per_s` is readings stored in InfluxDB and fed to the engine per second of draining
(the default backlog of 1M readings takes several seconds), so the generator's own cost is
not counted against ingest. CPU use of every process during the drain is reported too.
Phase 2 (freshness): only once the backlog has drained (every reading accepted, the store
flushed, influxd and accounting back below a third of a core: `settle_s`), the fleet
publishes in real time at `--live-rate` readings/s (every meter once a period of meters/rate
seconds) for `live_s` seconds. For every live reading, freshness is the time from its
timestamp until the ingest cycle that fed it to the engine ended — from then on
`service.footprints()` (what the live footprint API serves) includes it. Goal: p99 <= 1 s at
20,000 readings/s.
`lost` = readings published − readings counted back from InfluxDB with InfluxQL, exactly.
The bottleneck: when the pipeline's processes (accounting, influxd and its bridge, Mosquitto)
together used at least 90 % of the machine's cores during the drain, the machine's cores
(nothing can overlap any more: `cpu_bound_readings_per_s` is then the figure to compare);
else, when the accounting process used a full core, its interpreter (ingest's Python threads
share one core through the GIL); otherwise the ingest stage where the cycles spent most time
(`store`: wall time with at least one write in flight, writes overlap, pipeline.py). The machine's baseline measured in the same run
(`machine`: bare `json.loads` of fleet payloads, memory copy; benchmarks/machine.py) puts the
rates in proportion.
Phase 3 (signatures, docs/audit.md): `signatures_required_readings_per_s` against
`signatures_off_readings_per_s`, the same fleet batches signed and chained with Ed25519 or
not, through admission and the InfluxDB store in-process (`signature_phase` says how), and
`signatures_slowdown`: the median over `--signature-repeats` back-to-back pairs. It leaves the
engine and MQTT out, so it is an upper bound of the service's slowdown.
Phase 4 (signatures through the whole service, the goal's figure): `--service-signature-pairs`
back-to-back pairs of drains like phase 1's, order alternating, one from a fleet whose gateways
sign and chain every batch into a site that registers their keys and requires signatures, one
unsigned into a site with `signatures: off`, each a fresh session, database and accounting
process (`service_signature_phase` says how); `signatures_service_slowdown` (goal <= 0.10) is
the median of the pairs' 1 - required/off.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))

import paho.mqtt.client as mqtt  # noqa: E402
import psutil  # noqa: E402

from accounting.ingest.hot_path import compiled_passes  # noqa: E402
from accounting.ingest.subscriber import subscriptions  # noqa: E402
from accounting.service import AccountingService  # noqa: E402
from accounting.store.base import StoredReading  # noqa: E402
from accounting.store.influx import InfluxStore, reading_lines  # noqa: E402
from benchmarks.machine import machine_baseline  # noqa: E402
from simulators.fleet import Fleet, gateway_ids  # noqa: E402
from tanji.site import parse_site_text  # noqa: E402
from tanji.wire import readings_topic  # noqa: E402
from tests.services import SNAPSHOT_COLD_S, InfluxServer, MosquittoServer  # noqa: E402

CLIENT_ID = "bench-accounting"
GROUP = "bench"


def _open_session(host: str, port: int, topics: list[str], client_id: str = CLIENT_ID) -> None:
    """Create the accounting instance's persistent session, so the broker queues the backlog for it."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(host, port)
    client.loop_start()
    client.subscribe([(t, 1) for t in topics])
    subscribed.wait(10)
    client.disconnect()
    client.loop_stop()


def _close_session(host: str, port: int, client_id: str) -> None:
    """End a drained instance's persistent session, so the broker queues nothing more for it."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.connect(host, port)
    client.disconnect()


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _count(influx: InfluxServer, db: str) -> int:
    series = influx.query("SELECT COUNT(quality) FROM reading", db)["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def publisher(host: str, port: int, gateways: int, meters: int, keys_dir: str | None = None) -> None:
    """Child mode: the fleet, publishing what the parent asks on stdin (one JSON command a line);
    with `keys_dir` (`<gateway>.key` files), its gateways sign and chain their batches."""
    signers = None
    if keys_dir is not None:
        from gateway.signing_key import load_key

        signers = {g: load_key(Path(keys_dir) / f"{g}.key") for g in gateway_ids("fleet", gateways)}
    fleet = Fleet(host, port, gateways=gateways, meters_per_gateway=meters, site_id="fleet", period_s=1.0,
                  signers=signers)
    for line in sys.stdin:
        cmd = json.loads(line)
        fleet.period_s = cmd["period_ms"] / 1000
        if cmd["realtime"]:
            print(json.dumps(_publish_live(fleet, cmd["rounds"], cmd["start_ms"])), flush=True)
        else:
            stats = fleet.publish(cmd["rounds"], start_ms=cmd["start_ms"])
            print(json.dumps({"readings": stats.readings, "seconds": stats.seconds}), flush=True)


def _publish_live(fleet: Fleet, rounds: int, start_ms: int) -> dict:
    """Every round made beforehand, each published at its timestamp: the generator's own speed
    must not show as freshness. `late_s`: how far the latest round was behind its time."""
    payloads = list(fleet.payloads(rounds, start_ms))
    per_round = len(fleet.gateway_ids)
    period_ms = int(fleet.period_s * 1000)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tanji-fleet-live")
    client.max_inflight_messages_set(1000)
    client.connect(fleet.host, fleet.port)
    client.loop_start()
    late = 0.0
    readings = 0
    pending = []
    try:
        for r in range(rounds):
            delay = (start_ms + r * period_ms) / 1000 - time.time()
            if delay > 0:
                time.sleep(delay)
            late = max(late, -delay)
            for gateway, payload in payloads[r * per_round:(r + 1) * per_round]:
                pending.append(client.publish(readings_topic(fleet.site_id, gateway), payload, qos=1))
                readings += len(fleet.meter_ids[gateway])
        for info in pending:
            info.wait_for_publish(timeout=60)
    finally:
        client.loop_stop()
        client.disconnect()
    return {"readings": readings, "seconds": rounds * period_ms / 1000, "late_s": late}


class _Fleet:
    """The parent's handle on the publisher child."""

    def __init__(self, host: str, port: int, gateways: int, meters: int, keys_dir: Path | None = None) -> None:
        signing = [str(keys_dir)] if keys_dir is not None else []
        self.proc = subprocess.Popen([sys.executable, __file__, "--publisher", host, str(port), str(gateways),
                                      str(meters), *signing], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def publish(self, rounds: int, start_ms: int, period_ms: int, realtime: bool) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"rounds": rounds, "start_ms": start_ms, "period_ms": period_ms,
                                          "realtime": realtime}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fleet publisher exited with code {self.proc.wait()}")
        return json.loads(line)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


def ceiling_bodies(gateways: int, meters: int, rounds: int, start_ms: int, batch_lines: int) -> list[bytes]:
    """The backlog's line protocol in the store's request size: a fresh fleet (same seed) makes the
    same readings, formatted as ingest formats them (`reading_lines`)."""
    fleet = Fleet("127.0.0.1", 0, gateways=gateways, meters_per_gateway=meters, site_id="fleet", period_s=1.0)
    lines: list[bytes] = []
    bodies: list[bytes] = []
    for _, payload in fleet.payloads(rounds, start_ms):
        batch = json.loads(payload)
        lines += reading_lines([StoredReading(batch["site"], batch["gateway"], r["meter"], r["ts_ms"],
                                              r["quality"], r["values"]) for r in batch["readings"]])
        if len(lines) >= batch_lines:
            bodies.append(b"\n".join(lines[:batch_lines]))
            del lines[:batch_lines]
    if lines:
        bodies.append(b"\n".join(lines))
    return bodies


def store_ceiling(influx: InfluxServer, db: str, bodies: list[bytes],
                  cpu: dict[str, float] | None = None, writers: int = 1) -> float:
    """Readings/s a plain writer gets into influxd: `bodies` posted one after the other on one
    connection to the endpoint ingest writes to; every line is counted back. `cpu`, if given,
    gets the store's CPU seconds per reading (influxd and the v2 bridge in front of it).
    `writers` > 1: that many connections, each posting every `writers`-th body, all at once."""
    store_procs = {"influxd": psutil.Process(influx.influxd.proc.pid),
                   "influx_bridge": psutil.Process(influx.bridge.proc.pid)}
    cpu_before = {k: _cpu_s(p) for k, p in store_procs.items()}
    influx.create_database(db)
    url = urllib.parse.urlsplit(influx.url)
    path = f"/api/v2/write?org=tanji&bucket={db}&precision=ms"
    headers = {"Authorization": "Token bench", "Content-Type": "text/plain; charset=utf-8"}
    lines = sum(body.count(b"\n") + 1 for body in bodies)
    failures: list[str] = []

    def post(part: list[bytes]) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        for body in part:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            detail = resp.read()
            if resp.status != 204:
                failures.append(f"{resp.status} {detail[:300]!r}")
                break
        conn.close()

    threads = [threading.Thread(target=post, args=(bodies[i::writers],)) for i in range(writers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"influxd refused the ceiling write: {failures[0]}")
    stored = _count(influx, db)
    if stored != lines:
        raise RuntimeError(f"the ceiling writer stored {stored} of {lines} lines")
    if cpu is not None:
        cpu.update({k: (_cpu_s(p) - cpu_before[k]) / lines for k, p in store_procs.items()})
    # Dropped at once (and influxd left to settle): kept, its cache was snapshotted to TSM files
    # SNAPSHOT_COLD_S after the last write, i.e. inside the drain that follows (as in `signature_phase`)
    influx.query(f'DROP DATABASE "{db}"', db)
    settle(store_procs, 10.0)
    return lines / seconds


def cpu_bound(cores: int, accounting_s: float, store_s: float) -> float | None:
    """The most readings/s this machine could drain if every core did nothing but the pipeline's
    work: `cores` / (accounting's CPU seconds per reading + the store's, as measured in this run).
    Whatever the code does between requests, the drain cannot beat it; against the ceiling it
    says which ratio is possible here at all. None when no CPU was measured at all: the kernel
    counts CPU time in ticks (10 ms), which a tiny run (the suite's smoke test) may not reach."""
    total = accounting_s + store_s
    return cores / total if total > 0 else None


def settle(processes: dict[str, psutil.Process], limit_s: float = 30.0) -> float:
    """Wait until every one of `processes` uses less than a third of a core (at most `limit_s`)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = {k: _cpu_s(p) for k, p in processes.items()}
        time.sleep(0.5)
        if all((_cpu_s(processes[k]) - v) / 0.5 < 0.33 for k, v in before.items()):
            break
    return time.monotonic() - started


def signature_phase(gateways: int, meters: int, influx: InfluxServer, tmp_path: Path, rounds: int,
                    repeats: int = 6) -> dict:
    """Ingest readings/s with `signatures: required` against `off`, same readings, same run.

    The fleet's batches are signed and chained per gateway with Ed25519 (what its gateways
    would publish with keys registered); `off` ingests the same batches unsigned (what its
    gateways publish then). Each mode runs ingest's pipeline in-process (admission with the
    signature and chain checks, store formatting, the InfluxDB write with its evidence) over
    the messages waiting in its inbox, cycles of `CYCLE_MAX_MESSAGES` as the service takes them, two
    ways: on its three threads as the service runs it (`signatures_slowdown`: the store thread
    appends the evidence to its log and writes the batch points while the admitting thread
    checks the next cycle), and
    one cycle after the other on one thread (`signatures_serial_slowdown`: nothing overlaps, so
    every µs the signatures add shows). Modes alternate, `repeats` times each (off first in even
    repeats, required first in odd ones), each run into a fresh database (dropped after it, so
    no run carries an earlier one's cache snapshot) and evidence log. A run is timed from its
    pipeline's start until its last cycle is delivered (stored and acknowledged), as a running
    service's throughput is; stopping the pipeline afterwards is not timed (it waited out a
    0.1 s poll of the empty inbox, which added 0-100 ms at random to runs of ~1-2 s), and starts
    once influxd and this process are idle (`settle`, at most 5 s: without it the first run of a
    pair ran ~4 % slower than the second, 0.12 against 0.195 median slowdown over 36 pairs each
    order, docs/audit.md "Figures"). The
    slowdowns are the median over the repeats of each back-to-back pair's (`signatures_pairs_slowdown`
    lists them all): a single run of one mode scatters by up to 2x on this shared machine, so best
    against best (`signatures_best_slowdown`, kept for comparison with earlier figures) compares
    two lucky moments, where a pair shares its moment's load; the best run of each mode gives
    the rates and the CPU µs per reading of accounting and influxd. The engine is
    left out (its cost is the same in both modes), so the slowdown is relative to admission
    and store alone: an upper bound of the whole service's.
    """
    import base64
    from dataclasses import replace

    from accounting.ingest.admission import Admission
    from accounting.ingest.chain import ChainTracker
    from accounting.ingest.dedup import DedupIndex
    from accounting.ingest.pipeline import CYCLE_MAX_MESSAGES, Pipeline, quiet_gc
    from accounting.ingest.sequence import SequenceTracker
    from accounting.ingest.signatures import BatchSignatures
    from accounting.ingest.stats import IngestStats
    from accounting.ingest.subscriber import InboundMessage
    from gateway.signing_key import generate_key
    from tanji import signed_batch
    from tanji.gateway_keys import RegisteredKey
    from tanji.wire import encode_batch

    fleet = Fleet("127.0.0.1", 0, gateways=gateways, meters_per_gateway=meters, site_id="fleet", period_s=1.0)
    site = parse_site_text(fleet.site_text(), "fleet.yaml")
    keys = {g: generate_key(tmp_path / f"{g}.key") for g in fleet.gateway_ids}
    site = replace(site, gateways=tuple(replace(g, keys=(RegisteredKey(g.id, keys[g.id].public_key,
                                                                        keys[g.id].key_id),))
                                        for g in site.gateways))
    start_ms = int(time.time() * 1000) - (rounds + 5) * 1000
    unsigned, signed = [], []
    prev: dict[str, str | None] = dict.fromkeys(fleet.gateway_ids)
    for g, payload in fleet.payloads(rounds, start_ms):
        body = json.loads(payload)
        raw = signed_batch.raw_member(payload)
        sig, prev[g] = signed_batch.sign(keys[g], site.id, g, body["seq"], "c0ffee00c0ffee00", prev[g], raw)
        topic = f"tanji/v1/{site.id}/{g}/readings"
        unsigned.append((topic, payload))
        signed.append((topic, encode_batch(site.id, g, body["seq"], [], sent_ms=body["sent_ms"],
                                           sig=sig.to_json(), readings_text=raw.decode())))
    readings = sum(len(json.loads(p)["readings"]) for _, p in unsigned)

    class Source:
        """The pipeline's source: the messages waiting in its inbox, as a drained broker session leaves them."""

        def __init__(self, messages: list) -> None:
            self.inbox = queue.Queue()
            for m in messages:
                self.inbox.put(m)

        def ack(self, messages, unconfirmed=None) -> int:
            return len(messages)

    best: dict[tuple[str, str], float] = {}
    runs: dict[tuple[str, str], list[int]] = {}
    cpu: dict[tuple[str, str, str], float] = {}
    procs = {"accounting": psutil.Process(), "influxd": psutil.Process(influx.influxd.proc.pid)}
    checks = 0
    for i in range(repeats):
        for way in ("threads", "serial"):
            # counterbalanced: off first in even repeats, required first in odd ones, so that
            # what a run leaves influxd doing (snapshots, compactions) falls on both modes alike
            pair = [("off", unsigned), ("required", signed)]
            for mode, payloads in (pair if i % 2 == 0 else pair[::-1]):
                db = f"sig_{way}_{mode}_{i}"
                influx.create_database(db)
                store = InfluxStore(influx.url, token="bench", org="tanji", bucket=db,  # as the service makes it
                                    spill_dir=tmp_path / f"spill-{db}", evidence_dir=tmp_path / f"evidence-{db}")
                sites = {site.id: replace(site, signatures=mode)}
                verifier = BatchSignatures(sites) if mode != "off" else None
                admission = Admission(sites, DedupIndex(), SequenceTracker(), signatures=verifier,
                                      chains=ChainTracker(store) if verifier else None)
                messages = [InboundMessage(t, p, 0, 0, start_ms + rounds * 1000, 0) for t, p in payloads]
                source = Source(messages)
                delivered = [0.0]  # when the last cycle reached the engine stage: stored and acknowledged

                def deliver(cycles: list, delivered: list[float] = delivered) -> None:
                    delivered[0] = time.perf_counter()

                pipeline = Pipeline(source, admission, store, IngestStats(), deliver=deliver)
                quiet_gc()  # what start() does first, once per service: not a cost of these readings
                # what the run before left influxd doing (its database dropped, files deleted) is
                # the benchmark's, not this run's: the first run of a pair was ~4 % slower (below)
                settle(procs, 5.0)
                cpu0 = {k: _cpu_s(proc) for k, proc in procs.items()}
                t0 = time.perf_counter()
                if way == "threads":  # as the service runs it: admission, store and engine threads
                    pipeline.start()
                    while pipeline.messages_delivered < len(messages) and pipeline.alive():
                        time.sleep(0.005)
                else:  # one cycle after the other on one thread: nothing overlaps
                    for k in range(0, len(messages), CYCLE_MAX_MESSAGES):
                        pipeline.run_cycle(messages[k:k + CYCLE_MAX_MESSAGES])
                f0 = time.perf_counter()
                store.flush(120)  # nothing is spilled as a rule; if something was, its write counts
                t1 = time.perf_counter() if time.perf_counter() - f0 > 0.001 else delivered[0]
                rate = readings / (t1 - t0)
                for k, proc in procs.items():
                    us = (_cpu_s(proc) - cpu0[k]) * 1e6 / readings
                    cpu[(way, mode, k)] = min(cpu.get((way, mode, k), us), us)
                # Stopped after the clock: stop() waits out the admitting thread's 0.1 s poll of an
                # empty inbox, which a running service never does, and which added 0-100 ms at
                # random to runs of ~1-2 s (a pair's slowdown scattered by a few % from it alone).
                pipeline.stop()
                stored = _count(influx, db)
                # Dropped at once: influxd snapshots a database's cache to TSM files once it has
                # been cold for 10 s, i.e. during a later run, whose influxd CPU and rate it then
                # carried (~1.3 µs a reading; the longer run, `required`'s, caught more of it).
                influx.query(f'DROP DATABASE "{db}"', db)
                store.close()
                if stored != readings:
                    raise SystemExit(f"signature phase {way} {mode}: {stored} of {readings} readings stored")
                best[(way, mode)] = max(best.get((way, mode), 0.0), rate)
                runs.setdefault((way, mode), []).append(round(rate))
                if verifier is not None:
                    checks = verifier.stats.signature_checks
                    if verifier.stats.verified_batches != len(signed):  # the A/B measures nothing otherwise
                        raise SystemExit(f"signature phase: {verifier.stats.verified_batches} of {len(signed)} "
                                         f"batches verified ({verifier.to_dict()})")
    # One Ed25519 check, in this process (the library ingest verifies with): the cost a run of a
    # chain's batches pays once, whatever its length (accounting/ingest/signatures.py)
    key = keys[fleet.gateway_ids[0]]
    _, head = signed[0]
    message = signed_batch.header(site.id, fleet.gateway_ids[0], 0, "c0ffee00c0ffee00", key.key_id, None,
                                  signed_batch.readings_digest(signed_batch.raw_member(head)))
    public = BatchSignatures({site.id: site}).keys
    signature = base64.b64decode(json.loads(head)["sig"]["sig"])
    t0 = time.perf_counter()
    for _ in range(200):
        assert public.verify(site.id, key.key_id, signature, message)
    verify_us = (time.perf_counter() - t0) / 200 * 1e6
    threads_pairs, serial_pairs = _pairs(runs, "threads"), _pairs(runs, "serial")
    return {"signatures_off_readings_per_s": round(best[("threads", "off")]),
            "signatures_required_readings_per_s": round(best[("threads", "required")]),
            # the headline: the median over the back-to-back pairs (order alternating), not best
            # against best: single runs of one mode scatter by up to 2x on a shared machine, and
            # the best of each mode is two lucky moments, not one comparison (docs/audit.md)
            "signatures_slowdown": _median(threads_pairs),
            "signatures_serial_slowdown": _median(serial_pairs),
            # every pair's slowdown, sorted: the spread the median summarises
            "signatures_pairs_slowdown": threads_pairs,
            "signatures_serial_pairs_slowdown": serial_pairs,
            "signatures_best_slowdown": round(1 - best[("threads", "required")] / best[("threads", "off")], 3),
            "signatures_serial_off_readings_per_s": round(best[("serial", "off")]),
            "signatures_serial_required_readings_per_s": round(best[("serial", "required")]),
            "signatures_serial_best_slowdown": round(1 - best[("serial", "required")] / best[("serial", "off")], 3),
            # every run, in the order run: the spread the best hides
            "signatures_runs_readings_per_s": {f"{w}_{m}": r for (w, m), r in runs.items()},
            "signatures_pairs": repeats,
            "signature_checks_per_batch": round(checks / len(signed), 3),
            "signature_readings_per_batch": meters,
            "ed25519_verify_us": round(verify_us, 1),
            # CPU per reading (best run), the machine's other load does not count in it
            "signatures_cpu_us_per_reading": {f"{w}_{m}_{k}": round(v, 2) for (w, m, k), v in sorted(cpu.items())},
            "signatures_readings": readings}


def service_signature_phase(broker: MosquittoServer, influx: InfluxServer, tmp_path: Path, gateways: int,
                            meters: int, rounds: int, pairs: int) -> dict:
    """Ingest readings/s with `signatures: required` against `off` through the whole service.

    What the issue's goal names (ingest readings/s) is what phase 1 measures: a running
    `AccountingService` draining its broker session into InfluxDB and the engine. Here that is
    done in `pairs` back-to-back pairs of drains, order alternating: `off` drains a backlog of
    `rounds` polls of every meter from an unsigned fleet into a site with `signatures: off`;
    `required` drains the same backlog from a fleet whose gateways sign and chain every batch
    (`simulators.fleet.Fleet` with signers: Ed25519, one chain per gateway) into a site that
    registers their keys and requires signatures, with the evidence log the service keeps. Each
    run: a fresh persistent session, a fresh fleet (its own process), a fresh database (dropped
    after it, as in `signature_phase`), influxd and Mosquitto idle first (`settle`), and a fresh
    accounting process (`benchmarks/ingest_ab.py`'s drain child: the clock runs from the first
    message's arrival in its inbox until every reading is accepted). A `required` run must have
    verified every batch and an `off` run verified none, and both must store every reading
    (counted back exactly), or the phase fails. `signatures_service_slowdown` is the median of
    the pairs' 1 - required/off."""
    from benchmarks.ingest_ab import drain_command
    from gateway.signing_key import generate_key

    keys_dir = tmp_path / "fleet-keys"
    for g in gateway_ids("fleet", gateways):
        generate_key(keys_dir / f"{g}.key")
    procs = {"influxd": psutil.Process(influx.influxd.proc.pid), "mosquitto": psutil.Process(broker.proc.pid)}
    runs: dict[str, list[dict]] = {"off": [], "required": []}
    for i in range(pairs):
        for mode in (("off", "required") if i % 2 == 0 else ("required", "off")):
            cid, db = f"svc-sig-{mode}-{i}", f"svc_sig_{mode}_{i}"
            influx.create_database(db)
            _open_session(broker.host, broker.port, subscriptions(["fleet"], cid), client_id=cid)
            fleet = _Fleet(broker.host, broker.port, gateways, meters, keys_dir if mode == "required" else None)
            try:
                backlog = fleet.publish(rounds, int(time.time() * 1000) - (rounds + 5) * 1000, 1000, realtime=False)
            finally:
                fleet.stop()
            settle(procs, 10.0)
            spec = {"tree": str(REPO), "broker": f"{broker.host}:{broker.port}", "influx_url": influx.url, "db": db,
                    "client_id": cid, "gateways": gateways, "meters": meters, "readings": backlog["readings"],
                    "spill": str(tmp_path / f"spill-{db}"), "signatures": mode,
                    "keys_dir": str(keys_dir) if mode == "required" else None,
                    "evidence_dir": str(tmp_path / f"evidence-{db}")}
            cpu0 = {k: _cpu_s(p) for k, p in procs.items()}
            out = subprocess.run(drain_command(spec), capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                raise SystemExit(f"service signature phase, {mode} drain failed:\n{out.stderr[-3000:]}")
            result = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
            stored = _count(influx, db)
            influx.query(f'DROP DATABASE "{db}"', db)
            _close_session(broker.host, broker.port, cid)
            verified = (result["signatures"] or {}).get("verified_batches", 0)
            batches = backlog["readings"] // meters
            if stored != backlog["readings"] or result["accepted"] != backlog["readings"]:
                raise SystemExit(f"service signature phase {mode} {i}: {result['accepted']} accepted, {stored} stored "
                                 f"of {backlog['readings']} readings")
            if verified != (batches if mode == "required" else 0):
                raise SystemExit(f"service signature phase {mode} {i}: {verified} of {batches} batches verified "
                                 f"({result['signatures']})")
            runs[mode].append({"readings_per_s": round(result["readings_per_s"]),
                               "accounting_cpu_us_per_reading": result["accounting_cpu_us_per_reading"],
                               **{f"{k}_cpu_us_per_reading": round((_cpu_s(p) - cpu0[k]) * 1e6 / backlog["readings"], 2)
                                  for k, p in procs.items()},
                               "signature_checks": (result["signatures"] or {}).get("signature_checks", 0),
                               # where a mode's extra goes: the accounting process's threads, µs a reading
                               "thread_cpu_us_per_reading": result["thread_cpu_us_per_reading"]})
    slowdowns = sorted(round(1 - r["readings_per_s"] / o["readings_per_s"], 3)
                       for o, r in zip(runs["off"], runs["required"], strict=True))
    # The same comparison by the CPU both modes cost a reading (accounting, influxd, Mosquitto):
    # the drain is CPU-bound (docs/storage.md), so it is a second estimator beside the pairs'
    # rates, which the machine's other load scatters (±0.17 a pair on the shared 2-core
    # machine); it scatters too (influxd's share counts its idle seconds around the drain).
    cpu = {mode: _median([r["accounting_cpu_us_per_reading"] + r["influxd_cpu_us_per_reading"]
                          + r["mosquitto_cpu_us_per_reading"] for r in rs]) for mode, rs in runs.items()}
    return {"signatures_service_slowdown": _median(slowdowns),
            "goal_signatures_service_slowdown": 0.10,
            "signatures_service_pairs_slowdown": slowdowns,
            "signatures_service_cpu_us_per_reading": cpu,
            "signatures_service_cpu_slowdown": (round(1 - cpu["off"] / cpu["required"], 3) if cpu["required"]
                                                 else None),  # a tiny run may count no clock tick
            "signatures_service_off_readings_per_s": _median([r["readings_per_s"] for r in runs["off"]]),
            "signatures_service_required_readings_per_s": _median([r["readings_per_s"] for r in runs["required"]]),
            "signatures_service_readings_per_run": gateways * meters * rounds,
            "signatures_service_pairs": pairs,
            "signatures_service_runs": runs}


def _pairs(runs: dict[tuple[str, str], list[int]], way: str) -> list[float]:
    """Each repeat's 1 - required/off, the two measured back to back; sorted."""
    return sorted(round(1 - r / o, 3) for o, r in zip(runs[(way, "off")], runs[(way, "required")], strict=True))


def _median(values: list[float]) -> float:
    values = sorted(values)  # callers pass runs in the order they ran
    mid = len(values) // 2
    return round(values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2, 3)


def signatures_only(args: argparse.Namespace, machine: dict) -> int:
    """Phases 3 and 4 alone: their own influxd and Mosquitto, the same fleet, one JSON line with
    the machine baseline."""
    with tempfile.TemporaryDirectory(prefix="tanji-bench-") as tmp:
        influx = InfluxServer(Path(tmp) / "influxdb")
        broker = MosquittoServer(Path(tmp) / "mosquitto", extra_conf="max_inflight_messages 1000\n")
        influx.start()
        broker.start()
        try:
            signatures = signature_phase(args.gateways, args.meters, influx, Path(tmp), args.signature_rounds,
                                         args.signature_repeats) if args.signature_repeats else {}
            if args.service_signature_pairs:
                signatures |= service_signature_phase(broker, influx, Path(tmp), args.gateways, args.meters,
                                                      args.service_signature_rounds, args.service_signature_pairs)
        finally:
            broker.stop()
            influx.stop()
    print(json.dumps({"benchmark": "ingest_signatures", "meters": args.gateways * args.meters, **signatures,
                      "machine": machine}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=50)
    parser.add_argument("--meters", type=int, default=100, help="meters per gateway (readings per message)")
    parser.add_argument("--rounds", type=int, default=200, help="backlog polls of every meter (phase 1)")
    parser.add_argument("--live-rate", type=float, default=20_000, help="readings/s published in phase 2")
    parser.add_argument("--live-s", type=float, default=15, help="seconds of real-time publishing (phase 2)")
    parser.add_argument("--signature-rounds", type=int, default=20,
                        help="polls of every meter in the signatures: required vs off comparison (phase 3)")
    parser.add_argument("--gzip-level", type=int, default=None,
                        help="InfluxStore gzip level (default: the store's, i.e. 0 on loopback)")
    parser.add_argument("--signatures-only", action="store_true",
                        help="run phase 3 alone (signatures: required vs off, same run) and print its JSON line")
    parser.add_argument("--signature-repeats", type=int, default=6,
                        help="back-to-back pairs of the two modes in phase 3, order alternating (their median "
                             "slowdown is the headline)")
    parser.add_argument("--service-signature-rounds", type=int, default=200,
                        help="polls of every meter per drain in the whole-service comparison (phase 4)")
    parser.add_argument("--service-signature-pairs", type=int, default=4,
                        help="back-to-back pairs of whole-service drains, signatures: off and required, order "
                             "alternating (phase 4; their median slowdown is the goal's figure; 0 skips it)")
    parser.add_argument("--publisher", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        host, port, gateways, meters, *keys_dir = args.publisher
        publisher(host, int(port), int(gateways), int(meters), *keys_dir)
        return 0
    logging.basicConfig(level=logging.WARNING)
    machine = machine_baseline()  # before any server starts: the machine as the benchmark found it
    if args.signatures_only:
        return signatures_only(args, machine)
    n_meters = args.gateways * args.meters
    live_period_ms = max(1, round(1000 * n_meters / args.live_rate))
    live_rounds = max(1, round(args.live_s * 1000 / live_period_ms))

    with tempfile.TemporaryDirectory(prefix="tanji-bench-") as tmp:
        tmp_path = Path(tmp)
        broker = MosquittoServer(tmp_path / "mosquitto", extra_conf="max_inflight_messages 1000\n")
        influx = InfluxServer(tmp_path / "influxdb")
        broker.start()
        influx.start()
        influx.create_database("bench")
        service = None
        fleet = _Fleet(broker.host, broker.port, args.gateways, args.meters)
        try:
            site = parse_site_text(Fleet(broker.host, broker.port, gateways=args.gateways,
                                         meters_per_gateway=args.meters, site_id="fleet").site_text(), "fleet.yaml")
            _open_session(broker.host, broker.port, subscriptions([site.id], GROUP))

            backlog_start_ms = int(time.time() * 1000) - (args.rounds + 5) * 1000
            backlog = fleet.publish(args.rounds, backlog_start_ms, 1000, realtime=False)
            store = InfluxStore(influx.url, token="bench", org="tanji", bucket="bench", spill_dir=tmp_path / "spill",
                                gzip_level=args.gzip_level)
            gzip_level = store.gzip_level
            bodies = ceiling_bodies(args.gateways, args.meters, args.rounds, backlog_start_ms, store.batch_lines)
            ceiling_cpu: dict[str, float] = {}  # the store's CPU s per reading, written by a plain writer
            ceilings = [store_ceiling(influx, "ceiling_before", bodies, ceiling_cpu)]
            service = AccountingService([site], store, broker_host=broker.host, broker_port=broker.port,
                                        client_id=CLIENT_ID, share_group=GROUP)
            service.start()
            processes = {"accounting": psutil.Process(), "influxd": psutil.Process(influx.influxd.proc.pid),
                         "influx_bridge": psutil.Process(influx.bridge.proc.pid),
                         "mosquitto": psutil.Process(broker.proc.pid)}
            cpu_before = {k: _cpu_s(p) for k, p in processes.items()}
            drain_started = time.monotonic()
            while service.stats.accepted < backlog["readings"] and time.monotonic() - drain_started < 300:
                time.sleep(0.01)
            drain_s = time.monotonic() - drain_started
            drain_cpu_s = {k: _cpu_s(p) - cpu_before[k] for k, p in processes.items()}
            cores = {k: round(s / drain_s, 2) for k, s in drain_cpu_s.items()}
            stages_backlog = dict(service.stats.stage_s)
            store.flush(120)
            settle_s = settle(processes)

            fresh: list[float] = []
            # the publisher makes the live rounds before the first one's time (at its backlog speed, x2 for safety)
            prepare_s = 2 * live_rounds * n_meters / (backlog["readings"] / backlog["seconds"])
            live_start_ms = int((time.time() + 1 + prepare_s) * 1000)
            live_last_ms = live_start_ms + (live_rounds - 1) * live_period_ms
            last_seen: dict[str, int] = {}

            def on_event(event: dict) -> None:
                """Every live round a meter's newest timestamp now covers is fresh as of now."""
                if event["type"] != "meters":
                    return
                now_ms = time.time() * 1000
                for m in event["meters"]:
                    ts = m["last_ts_ms"]
                    if ts is None or ts < live_start_ms:
                        continue
                    seen = last_seen.get(m["meter"], live_start_ms - live_period_ms)
                    if ts > seen:
                        last_seen[m["meter"]] = ts
                        fresh.extend((now_ms - t) / 1000 for t in range(seen + live_period_ms,
                                                                         min(ts, live_last_ms) + 1, live_period_ms))

            service.add_listener(on_event)
            live_cpu = {k: _cpu_s(p) for k, p in processes.items()}
            live_t0 = time.monotonic()
            live = fleet.publish(live_rounds, live_start_ms, live_period_ms, realtime=True)
            # per second of live publishing (the preparation before it leaves the processes idle)
            live_cores = {k: round((_cpu_s(p) - live_cpu[k]) / min(live["seconds"], time.monotonic() - live_t0), 2)
                          for k, p in processes.items()}
            total = backlog["readings"] + live["readings"]
            deadline = time.monotonic() + 60
            while service.stats.accepted < total and time.monotonic() < deadline:
                time.sleep(0.05)
            store.flush(120)
            stored = _count(influx, "bench")
            fps = service.footprints(site.id, start_ms=0, end_ms=2**62)
            duplicates = service.stats.duplicates
            service.stop()
            service = None
            # the drain's database is snapshotted once cold: not inside the second ceiling's run
            time.sleep(SNAPSHOT_COLD_S + 1)
            settle(processes)
            ceilings.append(store_ceiling(influx, "ceiling_after", bodies))
            two_writer_cpu: dict[str, float] = {}
            two_writers = store_ceiling(influx, "ceiling_two_writers", bodies, two_writer_cpu, writers=2)
            signatures = signature_phase(args.gateways, args.meters, influx, tmp_path, args.signature_rounds,
                                         args.signature_repeats)
            if args.service_signature_pairs:
                signatures |= service_signature_phase(broker, influx, tmp_path, args.gateways, args.meters,
                                                      args.service_signature_rounds, args.service_signature_pairs)
        finally:
            if service is not None:
                service.stop()
            fleet.stop()
            influx.stop()
            broker.stop()

    fresh.sort()
    p99 = fresh[min(len(fresh) - 1, int(0.99 * len(fresh)))] if fresh else None
    rate = backlog["readings"] / drain_s
    n_cores = psutil.cpu_count() or 1
    if sum(cores.values()) >= 0.9 * n_cores:
        bottleneck = (f"the machine's {n_cores} cores (" + ", ".join(f"{k} {v}" for k, v in cores.items() if v >= 0.05)
                      + ")")
    elif cores["accounting"] >= 0.9:
        bottleneck = "accounting interpreter (one core, GIL)"
    else:
        bottleneck = max(stages_backlog, key=stages_backlog.get) if stages_backlog else None
    baseline = machine["json_loads_readings_per_s"]
    ceiling = max(ceilings)
    # What one reading costs in CPU, per process, during the drain and in the plain writer's run;
    # the bound says what rate both cores could carry at those costs (cpu_bound).
    drain_us = {k: s / backlog["readings"] * 1e6 for k, s in drain_cpu_s.items()}
    ceiling_us = {k: s * 1e6 for k, s in ceiling_cpu.items()}
    bound = cpu_bound(n_cores, drain_us["accounting"] / 1e6,
                      (ceiling_us["influxd"] + ceiling_us["influx_bridge"] + drain_us["mosquitto"]) / 1e6)
    result = {
        "benchmark": "ingest",
        "meters": n_meters,
        "readings_published": total,
        "readings_per_s": round(rate),
        "drain_s": round(drain_s, 2),
        "goal_readings_per_s": 100_000,
        "store_ceiling_readings_per_s": round(ceiling),
        "store_ceiling_runs_readings_per_s": [round(c) for c in ceilings],
        "ratio_to_store_ceiling": round(rate / ceiling, 3),
        "goal_ratio_to_store_ceiling": 0.8,
        # the same plain writer on two connections at once (as the store writes two cycles at once):
        # what influxd takes when it may use every core (docs/storage.md, "Compiled passes")
        "store_ceiling_two_writers_readings_per_s": round(two_writers),
        "store_ceiling_two_writers_cpu_us_per_reading": {k: round(v * 1e6, 2) for k, v in two_writer_cpu.items()},
        "ratio_to_two_writer_ceiling": round(rate / two_writers, 3),
        "gzip_level": gzip_level,
        "lost": total - stored,
        "duplicates": duplicates,
        "settle_s": round(settle_s, 2),
        "live_rate_readings_per_s": round(n_meters * 1000 / live_period_ms),
        "live_period_s": live_period_ms / 1000,
        "live_readings": live["readings"],
        "live_publish_late_s": round(live["late_s"], 3),
        "p50_freshness_s": round(fresh[len(fresh) // 2], 3) if fresh else None,
        "p99_freshness_s": round(p99, 3) if p99 is not None else None,
        "max_freshness_s": round(fresh[-1], 3) if fresh else None,
        "goal_p99_freshness_s": 1.0,
        "freshness_samples": len(fresh),
        "bottleneck": bottleneck,
        "cpu_cores_during_drain": cores,
        "cpu_us_per_reading_during_drain": {k: round(v, 2) for k, v in drain_us.items()},
        "store_ceiling_cpu_us_per_reading": {k: round(v, 2) for k, v in ceiling_us.items()},
        # all cores on accounting's CPU per reading + the store's (as the plain writer made it cost)
        "cpu_bound_readings_per_s": round(bound) if bound is not None else None,
        "cpu_bound_ratio_to_store_ceiling": round(bound / ceiling, 3) if bound is not None else None,
        "cpu_cores_during_live": live_cores,
        "stage_share": {k: round(v / sum(stages_backlog.values()), 3) for k, v in stages_backlog.items()},
        "baseline_json_loads_readings_per_s": round(baseline),
        "ratio_to_json_loads_baseline": round(rate / baseline, 3),
        "generator_readings_per_s": round(backlog["readings"] / backlog["seconds"]),
        "footprints": len(fps),
        **signatures,
        "compiled_passes": compiled_passes(),  # which code made these figures (setup.py)
        "machine": machine,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
