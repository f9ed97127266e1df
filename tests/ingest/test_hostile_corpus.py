"""10,000 hostile payloads through real Mosquitto into the real `tanji accounting` process, with a
SIGKILL in the middle and the whole corpus redelivered after a restart.

The corpus (`tests/ingest/malformed.py: hostile`): sizes up to and past 1 MiB, nesting up to
100,000 levels, numbers past every range (401 to 5,000 digits, 1e309, 2**64), broken
encodings (invalid UTF-8, lone surrogates, control characters, latin-1, bytes around the
document), rogue topics (unknown and unicode gateway names), poisoned status documents, and
physically impossible values; about one in twenty retained (a third of the rogue topics).
Between them, a plant's good batches. Proven, by exact counts from the store and the service:
the process stays up and ready, every hostile payload is quarantined with the reason a fresh
admission gives it (each distinct payload found by its SHA-256), and every good reading is
stored exactly once, through the kill, the restart and the second delivery of everything.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import signal
import sqlite3
import time

import pytest

from accounting.ingest.quarantine import TOPIC_MAX_CHARS, clean_text
from tests.ingest.malformed import hostile
from tests.ingest.test_hostile_service import accounting_process, get, prime, stop
from tests.ingest.traffic import HOUR_MS, Publisher, hour_start, plant_batches, wait_until
from tests.services import free_port

N = 10_000


def _rows(db, q: str, *args) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(q, args).fetchall()


def _publish(publisher: Publisher, stream: list, chunk: int = 500) -> None:
    for i in range(0, len(stream), chunk):
        part = stream[i:i + chunk]
        infos = [publisher.publish(topic, payload, retain=retain) for topic, payload, retain in part]
        for info in infos:
            info.wait_for_publish(60)
            assert info.is_published()


def _health(port: int) -> dict:
    status, body = get(port, "/api/v1/health")
    assert status == 200 and body["status"] == "ok", body
    return body["stats"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ten_thousand_hostile_payloads_quarantined_good_readings_stored_once_through_restarts(
        cq_site, mosquitto, tmp_path):
    t0 = hour_start(int(time.time() * 1000)) - HOUR_MS
    good = plant_batches(cq_site, start_ms=t0, step_ms=5_000, polls=400, polls_per_batch=2)
    expected_good = sum(b.readings for b in good)
    corpus = hostile(cq_site, [(b.topic, b.payload) for b in good], N)
    step = N // len(good)
    stream: list[tuple[str, bytes, bool]] = []
    for i, b in enumerate(good):
        stream.extend((h.topic, h.payload, h.retain) for h in corpus[i * step:(i + 1) * step])
        stream.append((b.topic, b.payload, False))
    stream.extend((h.topic, h.payload, h.retain) for h in corpus[len(good) * step:])
    retained_topics = {h.topic for h in corpus if h.retain}
    print(f"{N} hostile payloads ({sum(len(h.payload) for h in corpus) / 1e6:.1f} MB, "
          f"{sum(h.retain for h in corpus)} retained on {len(retained_topics)} topics), "
          f"reasons {dict(collections.Counter(r for h in corpus for r in h.reasons))}")

    db, state, port = tmp_path / "tanji.sqlite", tmp_path / "state", free_port()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    proc = accounting_process(mosquitto, db, state, port)
    try:
        assert wait_until(lambda: get(port, "/api/v1/health")[0] == 200, 120)
        prime(publisher, good[0], lambda: bool(_rows(db, "SELECT 1 FROM readings LIMIT 1")))
        # First delivery, with a SIGKILL in the middle: what was not acknowledged comes again.
        half = len(stream) // 2
        _publish(publisher, stream[:half])
        assert wait_until(lambda: _rows(db, "SELECT COUNT(*) FROM quarantine")[0][0] > N // 5, 120)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = accounting_process(mosquitto, db, state, port)
        _publish(publisher, stream[half:])
        assert wait_until(lambda: _rows(db, "SELECT COUNT(*) FROM readings")[0][0] == expected_good, 300)
        # Each distinct (topic, payload) is found by the topic quarantine keeps (cut to 256
        # characters) and the payload's SHA-256, and got the reason a fresh admission gives it.
        wanted = {(clean_text(h.topic, TOPIC_MAX_CHARS), hashlib.sha256(h.payload).hexdigest()): h
                  for h in corpus if "impossible_value" not in h.reasons}

        def quarantined_all() -> bool:
            return wanted.keys() <= set(_rows(db, "SELECT DISTINCT topic, sha256 FROM quarantine"))
        assert wait_until(quarantined_all, 300), len(wanted)
        reasons = collections.defaultdict(set)
        for topic, sha, reason in _rows(db, "SELECT topic, sha256, reason FROM quarantine"):
            reasons[(topic, sha)].add(reason)
        for key, h in wanted.items():
            assert reasons[key] == set(h.reasons), (h.topic, h.payload[:200], reasons[key], h.reasons)
        # Impossible values are quarantined reading by reading: find each by meter and time.
        impossible = [h for h in corpus if "impossible_value" in h.reasons]
        details = {d for (d,) in _rows(db, "SELECT detail FROM quarantine WHERE reason = 'impossible_value'")}
        for h in impossible:
            [r] = json.loads(h.payload)["readings"]
            assert any(f"({r['meter']}, ts_ms {r['ts_ms']})" in d for d in details), r
        assert wait_until(lambda: get(port, "/api/v1/health")[0] == 200, 60)
        _health(port)

        # Second delivery of everything, after a clean restart: all of it is quarantined again,
        # by exact count, and not one good reading is stored a second time.
        stop(proc)
        proc = accounting_process(mosquitto, db, state, port)
        assert wait_until(lambda: get(port, "/api/v1/health")[0] == 200, 120)
        _publish(publisher, stream)
        # every retained topic's message comes once more at the new subscription
        records = N + sum(len(h.reasons) - 1 for h in corpus) + len(retained_topics)
        assert wait_until(lambda: _health(port)["quarantined"] == records
                          and _health(port)["duplicates"] == expected_good, 300), (_health(port), records)
        stats = _health(port)
        assert stats["accepted"] == 0
        assert _rows(db, "SELECT COUNT(*) FROM readings")[0][0] == expected_good
        assert proc.poll() is None
    finally:
        publisher.close()
        stop(proc)
