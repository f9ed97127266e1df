"""The ingest pipeline: inbox → admitted → durable and acknowledged → delivered, on three threads.

One cycle (steps 1-2 on "accounting-ingest", 3-4 on "accounting-store", 5 on
"accounting-engine"; cycle N+1 is admitted while cycle N is written; with a store that takes
concurrent writes, `ReadingStore.concurrent_writes`, steps 3-4 run on writer threads, up to
that many cycles at once, evidence and acks still in cycle order):
1. take up to `cycle_max_messages` messages from the subscriber's inbox;
2. admit them (`accounting.ingest.admission`: validate, quarantine, dedup, sequence gaps) and
   format them for the store (`ReadingStore.encode_readings`);
3. write quarantine and readings to the store, retrying until durable;
4. PUBACK the messages to the broker, in cycle order;
5. hand the stored cycles to the `deliver` hook (the engines), count them in `IngestStats`,
   then call the `notify` hook (listeners); the `tick` hook runs on the same thread between
   cycles (periodic jobs), so none of them needs a lock against the others.

Acks after the store write are what make SIGKILL lose nothing: whatever was not acked is
redelivered by the broker (persistent session), and store and engine are idempotent on
(site, meter, ts_ms). Each stage hands cycles to the next through a bounded queue, so a slow
stage blocks the ones before it and in the end the broker holds the backlog. The store thread
mostly waits on the database, so the other two have the interpreter meanwhile. The dedup
index learns readings as they are admitted (safe because cycles are written in order and
retried until durable), so a copy arriving meanwhile still counts as a duplicate; a message
is acked only after its own cycle's write and every earlier one returned. Under a backlog
the engine is fed many cycles at once (at most `engine_batch_s` late), since its cost is
per channel touched, not per reading; once caught up, at once.

No input stops a stage. Admission never raises for a message (accounting/ingest/admission.py);
a store that refuses rows for good (`StoreRejectedError`, their content, not its state) is
answered per message: the message it refuses is quarantined (`store_rejected`), the others
are written. A hook that raises is logged and counted (`stage_errors`), and the stage goes
on. A thread that dies anyway (a bug below all that) sets `failure`: the service reports
itself failed and `tanji accounting` exits non-zero so its supervisor restarts it, instead
of a process that looks alive and ingests nothing.
"""

from __future__ import annotations

import collections
import gc
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from accounting.errors import StoreRejectedError
from accounting.ingest.admission import Admission, Admitted
from accounting.ingest.stats import IngestStats
from accounting.ingest.subscriber import InboundMessage, batch_seq
from accounting.store.base import EncodedReadings, QuarantinedMessage, ReadingStore

log = logging.getLogger(__name__)

GC_THRESHOLD = 50_000
SWITCH_INTERVAL_S = 0.0005
#: Messages a cycle takes at most: the unit of one store write, one evidence-log sync and one
#: acknowledgement, and under `signatures` the span over which a chain's batches share one
#: Ed25519 check (accounting/ingest/signatures.py). At 500 (50,000 readings of the benchmark's
#: fleet) the broker's `max_inflight_messages 1000` (tanji/broker_config.py) lets two cycles be
#: unacknowledged at once (one written while the next is admitted, or two written): draining a
#: backlog it measured no slower than 200, and what `signatures: required` adds to accounting's
#: CPU was half of what it adds at 200 (docs/storage.md, "The service's own cycle"; docs/audit.md).
#: The benchmarks run it, as `tanji accounting` does.
CYCLE_MAX_MESSAGES = 500


class Source(Protocol):
    """Where messages come from and where their acknowledgements go (`MqttSubscriber`)."""

    inbox: queue.Queue[InboundMessage]

    def ack(self, messages: list[InboundMessage], unconfirmed: set[int] | None = None) -> int: ...


@dataclass(eq=False)
class Cycle:
    """One ingest cycle on its way through the pipeline."""

    messages: list[InboundMessage]
    admitted: Admitted
    encoded: EncodedReadings  # the store's formatting of admitted.rows
    inserted: int = 0
    stored_at: float = 0.0


Hook = Callable[[list[Cycle]], None]
_IDLE = Cycle([], Admitted(), EncodedReadings(()))


def quiet_gc() -> None:
    """Keep the cyclic garbage collector out of ingest's way (process-wide, once started).

    Ingest allocates a few container objects per reading (values dicts, rows) and frees them a
    cycle later; with the default threshold (700) the collector ran hundreds of times a second
    and cost ~1 µs per reading, ~20 % of the whole ingest budget. Everything built before ingest
    starts (engines, topology, caches) is moved out of the collector's sight with `gc.freeze`,
    and the youngest generation is collected every 50,000 allocations instead. Reference
    counting still frees everything ingest allocates; only cycles wait a little longer.
    """
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], GC_THRESHOLD), *threshold[1:])


def quick_handover() -> None:
    """Give a thread whose socket answered the interpreter within 0.5 ms (process-wide).

    The MQTT network thread and the store thread mostly wait on sockets; every time a read
    returns they need the GIL back, and with Python's default switch interval (5 ms) each such
    return waited up to that long behind the admitting or engine thread. paho reads a message
    in several small reads (its header byte by byte), so this latency was paid several times
    per message and per store request, on the paths no other stage overlaps.
    """
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))


class Pipeline:
    """Runs ingest cycles from `source` through `admission` and `store` to the hooks.

    Hooks (all called on the engine thread): `deliver(cycles)` gets stored, acknowledged
    cycles (when it returns, their readings count as accepted); `notify(cycles)` runs after
    they were counted; `tick()` runs between cycles, at least every 50 ms.
    """

    pipeline_depth = 2  # admitted cycles waiting for the store thread
    engine_queue_depth = 8  # stored cycles waiting for the engine thread
    engine_batch_s = 1.0

    def __init__(self, source: Source, admission: Admission, store: ReadingStore, stats: IngestStats, *,
                 deliver: Hook, notify: Hook | None = None, tick: Callable[[], None] | None = None,
                 cycle_max_messages: int = CYCLE_MAX_MESSAGES, cycle_wait_s: float = 0.02) -> None:
        self.source = source
        self.admission = admission
        self.store = store
        self.stats = stats
        self.deliver = deliver
        self.notify = notify
        self.tick = tick
        self.cycle_max_messages = cycle_max_messages
        self.cycle_wait_s = cycle_wait_s
        self._refused: collections.deque[tuple[str, str, int]] = collections.deque()
        self._refusing = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # What accounting.ingest.readiness asks: messages taken from the inbox, delivered to
        # the engines, and when the last ones were taken (each written by one thread only).
        self.messages_taken = 0
        self.messages_delivered = 0
        self.last_taken_at = 0.0
        self.failed = threading.Event()
        self.failure: str | None = None
        self.store_failing_since: float | None = None  # monotonic time of the first failed try of the current write

    def start(self) -> None:
        """Quiet the garbage collector, hand the interpreter over sooner, start the three threads."""
        quiet_gc()
        quick_handover()
        self._thread = threading.Thread(target=self._guarded, args=(self._run,), name="accounting-ingest",
                                        daemon=True)
        self._thread.start()

    def _guarded(self, target: Callable[..., None], *args: object) -> None:
        """Run a stage's thread; if it dies other than by `stop()`, say so for good (`failure`)."""
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - recorded, logged, and the process exits non-zero
            if self._stopping.is_set():
                log.exception("ingest stage %s failed while stopping", threading.current_thread().name)
            else:
                self._fail(f"{threading.current_thread().name} died: {type(exc).__name__}: {exc}")
                log.critical("ingest stage %s died; the service is failed and must be restarted",
                             threading.current_thread().name, exc_info=True)
            return
        if not self._stopping.is_set():
            self._fail(f"{threading.current_thread().name} ended without being stopped")

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
        self.failed.set()

    def alive(self) -> bool:
        """Started, not failed, and not stopped."""
        return self._thread is not None and not self.failed.is_set() and not self._stopping.is_set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the cycles under way (stored ones are delivered), then return."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def run_cycle(self, messages: list[InboundMessage]) -> None:
        """One cycle start to end on the calling thread (what the pipeline does on three)."""
        self.messages_taken += len(messages)
        cycle = self._admit(messages)
        self._write(cycle)
        self._deliver([cycle])

    # -- the three threads ----------------------------------------------------------------

    def _run(self) -> None:
        admitted: queue.Queue[Cycle | None] = queue.Queue(self.pipeline_depth)
        stored: queue.Queue[Cycle | None] = queue.Queue(self.engine_queue_depth)
        feeder = threading.Thread(target=self._guarded, args=(self._engine_loop, stored),
                                  name="accounting-engine", daemon=True)
        writer = threading.Thread(target=self._guarded, args=(self._write_loop, admitted, stored, feeder),
                                  name="accounting-store", daemon=True)
        feeder.start()
        writer.start()
        try:
            while not self._stopping.is_set() and writer.is_alive():
                batch = self._take()
                if batch:
                    _hand_over(admitted, self._admit(batch), writer)
        finally:
            _hand_over(admitted, None, writer)
            writer.join()
            feeder.join()

    def _write_loop(self, admitted: queue.Queue[Cycle | None], stored: queue.Queue[Cycle | None],
                    feeder: threading.Thread) -> None:
        try:
            writers = max(1, int(self.store.concurrent_writes))
            if writers > 1:
                self._write_concurrently(admitted, stored, feeder, writers)
                return
            while (cycle := self._next_admitted(admitted)) is not None:
                self._write(cycle)
                _hand_over(stored, cycle, feeder)
        finally:
            _hand_over(stored, None, feeder)

    def _next_admitted(self, admitted: queue.Queue[Cycle | None],
                       waiting: Callable[[], None] = lambda: None) -> Cycle | None:
        """The store stage's next cycle; None when none will come (the admitting stage ended, or
        the pipeline is stopping). `waiting` runs every 50 ms while none is there."""
        while True:
            try:
                return admitted.get(timeout=0.05)
            except queue.Empty:
                if self._stopping.is_set():
                    return None
                waiting()

    def _write_concurrently(self, admitted: queue.Queue[Cycle | None], stored: queue.Queue[Cycle | None],
                            feeder: threading.Thread, writers: int) -> None:
        """The store stage with up to `writers` cycles' writes in flight (`ReadingStore.concurrent_writes`).

        One request at a time left the database idle while the store thread read the answer,
        acked, formatted the next cycle's evidence and waited for the interpreter (the plain
        bulk writer of benchmarks/ingest.py keeps influxd ~twice as busy). Each cycle is written
        on a writer thread of its own; the order that matters is kept by `_Turn`s: a cycle's
        evidence (batch and chain-event points, which a later cycle may rewrite) is written only
        after every earlier cycle's, and its messages are acked, and handed to the engine, only
        after its own write and every earlier cycle's ack: the same promise as one at a time.
        """
        slots = threading.BoundedSemaphore(writers)
        busy = _Busy(self.stats)
        before = _Turn(done=True)
        futures: list[Future[None]] = []
        pool = ThreadPoolExecutor(writers, thread_name_prefix="accounting-store-write")
        finished = False
        def check_writers() -> None:
            nonlocal futures
            futures = _pending(futures)  # raises what a writer raised

        try:
            while True:
                check_writers()
                cycle = self._next_admitted(admitted, check_writers)
                if cycle is None:
                    break
                while not slots.acquire(timeout=0.05):
                    check_writers()
                turn = _Turn()
                futures.append(pool.submit(self._write_in_turn, cycle, before, turn, stored, feeder, busy, slots))
                before = turn
            finished = True
        finally:
            pool.shutdown(wait=finished)  # a writer still retrying a failing store must not hold up a failure
        for f in futures:
            f.result()

    def _write_in_turn(self, cycle: Cycle, before: _Turn, turn: _Turn, stored: queue.Queue[Cycle | None],
                       feeder: threading.Thread, busy: _Busy, slots: threading.BoundedSemaphore) -> None:
        """One cycle on a writer thread: store (durable), then, once the cycle before is acked, ack."""
        try:
            with busy:
                cycle.inserted = self._store(cycle, before, turn)
            cycle.stored_at = time.monotonic()
            before.acked.wait()
            if not before.ok:
                raise _EarlierWriteFailed("an earlier cycle's write failed; this one is not acknowledged")
            t2 = time.perf_counter()
            self.source.ack(cycle.messages, cycle.admitted.unconfirmed)
            t3 = time.perf_counter()
            with self.stats.lock:
                self.stats.stage_s["ack"] += t3 - t2
            _hand_over(stored, cycle, feeder)
            turn.ok = True
        finally:
            turn.evidence.set()  # a later cycle waiting on this one goes on (or fails, when it failed)
            turn.acked.set()
            slots.release()

    def _engine_loop(self, stored: queue.Queue[Cycle | None]) -> None:
        held: list[Cycle] = []  # stored and acked, not yet delivered
        while True:
            try:
                cycle = stored.get(timeout=0.05)
            except queue.Empty:
                cycle = _IDLE
            if cycle is None:
                self._deliver(held)
                return
            if cycle is not _IDLE:
                held.append(cycle)
            if held and (self._caught_up(stored) or time.monotonic() - held[0].stored_at >= self.engine_batch_s):
                self._deliver(held)
                held = []
            if self.tick is not None:
                self.tick()

    # -- the stages -----------------------------------------------------------------------

    def _take(self) -> list[InboundMessage]:
        inbox = self.source.inbox
        try:
            first = inbox.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.cycle_wait_s
        while len(batch) < self.cycle_max_messages:
            try:
                batch.append(inbox.get_nowait())
            except queue.Empty:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.001)
        self.last_taken_at = time.monotonic()
        self.messages_taken += len(batch)
        return batch

    def _caught_up(self, stored: queue.Queue[Cycle | None]) -> bool:
        """Nothing stored waits and less than a cycle's worth is in the inbox: deliver now, not later."""
        return stored.empty() and self.source.inbox.qsize() < self.cycle_max_messages

    def _admit(self, messages: list[InboundMessage]) -> Cycle:
        t0 = time.perf_counter()
        self._forget_refused()
        admitted = self.admission.admit(messages)
        t1 = time.perf_counter()
        try:
            encoded = self.store.encode_readings(admitted.rows)
        except Exception:  # noqa: BLE001 - find the message whose rows cannot be formatted
            log.exception("formatting a cycle for the store failed; finding the message responsible")
            self._keep_only(messages, admitted, self.store.encode_readings, "internal_error")
            encoded = self.store.encode_readings(admitted.rows)
        t2 = time.perf_counter()
        with self.stats.lock:
            self.stats.stage_s["admit"] += t1 - t0
            self.stats.stage_s["encode"] += t2 - t1
        return Cycle(messages, admitted, encoded)

    def _keep_only(self, messages: list[InboundMessage], admitted: Admitted,
                   accept: Callable[[list], object], reason: str, refused: dict[int, str] | None = None) -> int:
        """Drop from `admitted` the rows of each message `accept(rows)` raises for, or that
        `refused` names (message index: why), quarantining the message instead (its readings are
        unlearned, so a good copy can come later); returns the sum of what `accept` returned for
        the others (rows written, when it writes)."""
        rows, origins, kept = admitted.rows, admitted.origins, 0
        admitted.rows, admitted.origins = [], []
        for index, start, end in origins:
            part = rows[start:end]
            try:
                if refused and index in refused:
                    raise StoreRejectedError(f"the record of its batch: {refused[index]}")
                result = accept(part)
            except Exception as exc:  # noqa: BLE001 - this message's rows, and only them, are refused
                m = messages[index]
                log.error("the store refuses the readings of a message on %.200r (%s: %s); quarantined as %s",
                          m.topic, type(exc).__name__, exc, reason)
                admitted.quarantined.append(self.admission.reject(m, reason, f"{type(exc).__name__}: {exc}",
                                                                  whole=True))
                self._refused.extend((r.site, r.meter, r.ts_ms) for r in part)
                continue
            kept += result if isinstance(result, int) else 0
            admitted.origins.append((index, len(admitted.rows), len(admitted.rows) + len(part)))
            admitted.rows.extend(part)
        return kept

    def _evidence_alone(self, cycle: Cycle) -> dict[int, str]:
        """Write a cycle's batch and chain-event records after the store refused a write of the
        cycle: all in one write, else record by record. Returns the messages (index: why) whose
        batch record the store refuses for its content (a batch older than InfluxDB's retention):
        they are quarantined with their readings, the others stored. Without this, one such
        batch made every retry fail and stopped ingest for every gateway."""
        admitted = cycle.admitted
        write = self.store.write_evidence  # type: ignore[attr-defined]
        try:
            write(admitted.batches, admitted.chain_events)
            return {}
        except StoreRejectedError:
            pass
        why: dict[tuple[str, str, int], str] = {}
        kept = []
        for b in admitted.batches:
            try:
                write([b], ())
                kept.append(b)
            except StoreRejectedError as exc:
                why[(b.site, b.gateway, b.seq)] = f"{type(exc).__name__}: {exc}"
        events = []
        for e in admitted.chain_events:
            try:
                write((), [e])
                events.append(e)
            except StoreRejectedError:
                log.exception("the store refuses a chain event record (%s %s/%s seq %d-%d); not kept",
                              e.kind, e.site, e.gateway, e.seq_lo, e.seq_hi)
        admitted.batches, admitted.chain_events = kept, events
        refused: dict[int, str] = {}
        for index, _, _ in admitted.origins:
            m = cycle.messages[index]
            site, gateway = m.topic.split("/")[2:4]
            key = (site, gateway, batch_seq(m.payload))
            if key in why:
                refused[index] = why[key]
        return refused

    def _forget_refused(self) -> None:
        """Unlearn (on the admitting thread, which owns the dedup index) readings the store refused."""
        while self._refused:
            site, meter, ts_ms = self._refused.popleft()
            self.admission.dedup.forget(site, meter, ts_ms)

    def _write(self, cycle: Cycle) -> None:
        """Store (durable), then ack: in cycle order, on the store thread."""
        t1 = time.perf_counter()
        cycle.inserted = self._store(cycle)
        cycle.stored_at = time.monotonic()
        t2 = time.perf_counter()
        self.source.ack(cycle.messages, cycle.admitted.unconfirmed)
        t3 = time.perf_counter()
        with self.stats.lock:
            self.stats.stage_s["store"] += t2 - t1
            self.stats.stage_s["ack"] += t3 - t2

    def _store(self, cycle: Cycle, before: _Turn | None = None, turn: _Turn | None = None) -> int:
        """Write until durable; retries forever (nothing is acked meanwhile, so nothing is lost),
        except that rows the store refuses for good are answered per message. With `turn`
        (concurrent writes), the first request (the evidence rides in it) goes in cycle order, then the rest."""
        delay = 0.1
        quarantined = False
        first_written: int | None = None  # concurrent writes: the first request's result, once written
        try:
            while True:
                try:
                    if not quarantined:
                        self._quarantine(cycle.admitted.quarantined)
                        quarantined = True
                    admitted = cycle.admitted
                    evidence = admitted.batches or admitted.chain_events  # signed batches beside their readings
                    try:
                        if turn is not None and before is not None:
                            # the first request, with the evidence (EvidenceStore.write_with_evidence),
                            # in cycle order; the rest may overlap the next cycle's first
                            first, rest = self.store.split_first_write(cycle.encoded)
                            if first_written is None:
                                before.evidence.wait()
                                if not before.evidence_ok:
                                    raise _EarlierWriteFailed("an earlier cycle's evidence was not written")
                                first_written = (self.store.write_with_evidence(  # type: ignore[attr-defined]
                                    first, admitted.batches, admitted.chain_events) if evidence
                                    else self.store.write_encoded(first))
                                turn.evidence_ok = True
                                turn.evidence.set()
                            if rest.rows or rest.payload:
                                return first_written + self.store.write_encoded(rest)
                            return first_written
                        if evidence:  # with the readings (one transaction in SQLite; idempotent)
                            return self.store.write_with_evidence(  # type: ignore[attr-defined]
                                cycle.encoded, admitted.batches, admitted.chain_events)
                        return self.store.write_encoded(cycle.encoded)
                    except StoreRejectedError:
                        with self._refusing:  # one cycle at a time: admission's reject and its rate cap
                            refused: dict[int, str] = {}
                            if evidence and not (turn is not None and turn.evidence_ok):
                                # the batches' records stay, as their messages' quarantine records do
                                refused = self._evidence_alone(cycle)
                            if turn is not None:
                                turn.evidence_ok = True
                                turn.evidence.set()
                            refused_before = len(cycle.admitted.quarantined)
                            inserted = self._keep_only(cycle.messages, cycle.admitted, self.store.write_readings,
                                                       "store_rejected", refused)
                            self._quarantine(cycle.admitted.quarantined[refused_before:])
                            cycle.encoded = EncodedReadings(cycle.admitted.rows)
                            return inserted
                except _EarlierWriteFailed:
                    raise
                except Exception:
                    if self._stopping.is_set():
                        raise
                    if self.store_failing_since is None:
                        self.store_failing_since = time.monotonic()
                    log.exception("store write failed; retrying in %.1f s", delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)
        finally:
            self.store_failing_since = None

    def _quarantine(self, records: list[QuarantinedMessage]) -> None:
        if records:
            self.store.quarantine(records)

    def _deliver(self, cycles: list[Cycle]) -> None:
        """Hand stored cycles to `deliver`, count them, then `notify`."""
        if not cycles:
            return
        t3 = time.perf_counter()
        self._hook(self.deliver, cycles, "engine")
        t4 = time.perf_counter()
        stats = self.stats
        sequences = self.admission.sequences
        with stats.lock:
            for cycle in cycles:
                admitted = cycle.admitted
                stats.received += admitted.readings_messages
                stats.accepted += cycle.inserted
                stats.duplicates += admitted.duplicates + len(admitted.rows) - cycle.inserted
                for q in admitted.quarantined:
                    stats.quarantined_by_reason[q.reason] += 1
                    if q.payload_dropped:
                        stats.quarantine_payloads_dropped += 1
                for site, meter in admitted.conflicts:
                    stats.conflicts[f"{site}/{meter}"] += 1
                if cycle.messages:
                    stats.last_message_ms = max(m.received_ms for m in cycle.messages)
                stats.cycles += 1
            stats.seq_gaps = sequences.gaps()
            stats.seq_anomalies = dict(sequences.anomalies)
            stats.conflict_checks_failed = self.admission.first_copies.checks_failed
        self.messages_delivered += sum(len(c.messages) for c in cycles)
        if self.notify is not None:
            self._hook(self.notify, cycles, "notify")
        t5 = time.perf_counter()
        with stats.lock:
            stats.stage_s["engine"] += t4 - t3
            stats.stage_s["notify"] += t5 - t4

    def _hook(self, hook: Hook, cycles: list[Cycle], stage: str) -> None:
        """Call a hook; if it raises, try each cycle alone, and count the cycles it still fails on."""
        try:
            hook(cycles)
            return
        except Exception:  # noqa: BLE001 - the readings are stored; the stage must go on
            log.exception("the %s stage failed on %d stored cycles", stage, len(cycles))
        failed = len(cycles)
        if len(cycles) > 1:
            failed = 0
            for cycle in cycles:
                try:
                    hook([cycle])
                except Exception:  # noqa: BLE001
                    failed += 1
        with self.stats.lock:
            self.stats.stage_errors[stage] += failed
        if failed:
            log.error("the %s stage skipped %d cycles it cannot take (their readings are stored; a restart or "
                      "a recompute reads them from the store)", stage, failed)


class _EarlierWriteFailed(RuntimeError):
    """A cycle before this one was not written (the store stage is failing): do not ack out of order."""


class _Turn:
    """One cycle's place in the order of concurrent writes: `evidence` is set once its evidence
    and every earlier cycle's is written (`evidence_ok`), `acked` once its messages and every
    earlier cycle's are acknowledged (`ok`); both are also set when its write failed, unset ok."""

    __slots__ = ("evidence", "acked", "evidence_ok", "ok")

    def __init__(self, done: bool = False) -> None:
        self.evidence = threading.Event()
        self.acked = threading.Event()
        self.evidence_ok = self.ok = done
        if done:
            self.evidence.set()
            self.acked.set()


class _Busy:
    """The store stage's wall time with writes in flight on several threads: the time during which
    at least one is, counted once (so `stage_s["store"]` compares with the one-thread stages)."""

    def __init__(self, stats: IngestStats) -> None:
        self.stats = stats
        self._lock = threading.Lock()
        self._in_flight = 0
        self._since = 0.0

    def _step(self, delta: int) -> None:
        with self._lock:
            now = time.perf_counter()
            if self._in_flight:
                with self.stats.lock:
                    self.stats.stage_s["store"] += now - self._since
            self._since = now
            self._in_flight += delta

    def __enter__(self) -> None:
        self._step(1)

    def __exit__(self, *exc: object) -> None:
        self._step(-1)


def _pending(futures: list[Future[None]]) -> list[Future[None]]:
    """The writes still running; re-raises what a finished one raised."""
    for f in futures:
        if f.done():
            f.result()
    return [f for f in futures if not f.done()]


def _hand_over(q: queue.Queue[Cycle | None], item: Cycle | None, consumer: threading.Thread) -> None:
    """Put, waiting while the consumer is behind; give up only if it has died."""
    while consumer.is_alive():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            pass
