"""Each gateway's chain of signed batches as ingest sees it: links, gaps, forks and replays.

A batch names its predecessor's hash (`prev`); the tracker remembers recent (seq → hash, prev)
per chain and, for every admitted signed batch, checks both of its links:
- a batch at a seq already admitted with the same hash is a **replay** (at-least-once delivery,
  or someone publishing an old batch again): recorded, its readings skipped as the duplicates
  they are;
- a batch at a seq already admitted with other content, or whose `prev` is not the hash of the
  admitted batch before it, or whose hash is not what the admitted batch after it names, is a
  **fork**: two different histories signed with this gateway's key (a copied key, a spool put
  back from a backup). It is quarantined (`chain_fork`) and recorded, and the alarm is raised;
- seqs skipped are a suspected **gap**. A batch published again after a lost one (the gateway
  republishes what accounting never confirmed) fills it within seconds, so a gap is only
  recorded and alarmed when it is still open after `gap_grace_s` (default 120 s), and only
  after the store confirms the batches are missing (with a share group, other accounting
  instances may hold them). A batch that arrives later still closes the recorded gap.
- a chain the gateway had not used before, while it had another, is a **new chain**: the
  gateway lost its chain state; batches after the old chain's last one may be missing.

A batch is examined (`examine`: replay, fork) before its message's other checks and remembered
(`admit`) only once the message is admitted whole: a message quarantined in between leaves no
link behind (`examine` says why). A cycle whose store write fails is retried as admitted, never
admitted again, so the tracker sees each batch once; if the process dies before the write is
durable, the tracker is seeded again from the store, which does not hold the batch, and its
redelivered copy is new. A batch copy arriving while the first is still being written (the
gateway republishes after 10 s unconfirmed) is a replay, and rightly: its cycle is written and
acknowledged after the first's. A batch whose record the store refuses for good (older than
InfluxDB's retention) stays remembered: its message is quarantined (`store_rejected`) and
confirmed to its gateway, so no copy comes again; one that did would be counted a replay, and
lose nothing: its readings are in the first copy's quarantine record, and the same bytes would be
refused the same way. Chain events ride in their cycle and are retried with it; ones a crash loses are
recorded again when their batches come again (not rolled back: re-derived).

Memory: the last `window` links per chain; older ones are asked from the store. State is
seeded from the store on start (recent batches, open gaps). Thread safety: `examine` and
`admit` run on the admitting thread and `check` on the engine thread; one lock serialises them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from accounting.store.evidence import ChainEvent, EvidenceStore, StoredBatch
from tanji.errors import WireFormatError

log = logging.getLogger(__name__)

GAP_GRACE_S = 120.0
FORK_ALARM_MS = 24 * 3_600_000


@dataclass
class _Chain:
    gateway: str
    highest: int = -1
    hashes: dict[int, str] = field(default_factory=dict)
    prevs: dict[int, str | None] = field(default_factory=dict)
    suspected: list[list[int]] = field(default_factory=list)  # [lo, hi, detected_ms]
    recorded: list[ChainEvent] = field(default_factory=list)  # open gap events


class ChainTracker:
    """`observe(batch)` per admitted signed batch; `check()` periodically; `alarms()` for the API."""

    def __init__(self, store: EvidenceStore | None = None, *, window: int = 8192,
                 gap_grace_s: float = GAP_GRACE_S) -> None:
        self.store = store
        self.window = window
        self.gap_grace_ms = int(gap_grace_s * 1000)
        self._chains: dict[tuple[str, str, str], _Chain] = {}
        self._gateway_chains: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()
        self.events: list[ChainEvent] = []  # recorded by observe, drained by admission into its cycle
        self.forks: list[ChainEvent] = []
        self.counts: dict[str, int] = {"gap": 0, "fork": 0, "replay": 0, "new_chain": 0}

    # -- start ---------------------------------------------------------------------------

    def restore(self, site: str, gateways: list[str]) -> None:
        """Seed from the store: each gateway's recent batches, the site's open gaps and recent forks."""
        if self.store is None:
            return
        with self._lock:
            for gateway in gateways:
                for b in self.store.recent_batches(site, gateway, self.window):
                    if b.chain is None:
                        continue
                    chain = self._chain(site, gateway, b.chain)
                    chain.hashes[b.seq], chain.prevs[b.seq] = b.hash, b.prev
                    chain.highest = max(chain.highest, b.seq)
            now = int(time.time() * 1000)
            for e in self.store.chain_events(site, since_ms=now - FORK_ALARM_MS):
                if e.kind == "fork":
                    self.forks.append(e)
            for e in self.store.chain_events(site, open_only=True):
                self._chain(site, e.gateway, e.chain).recorded.append(e)

    def _chain(self, site: str, gateway: str, chain_id: str) -> _Chain:
        key = (site, gateway, chain_id)
        chain = self._chains.get(key)
        if chain is None:
            chain = self._chains[key] = _Chain(gateway)
            self._gateway_chains.setdefault((site, gateway), set()).add(chain_id)
        return chain

    # -- per batch (admitting thread) ----------------------------------------------------

    def _known(self, b: StoredBatch, chain: _Chain, seq: int) -> tuple[str | None, str | None]:
        """(hash, prev) of an admitted batch of this chain, from memory or, if older, the store."""
        if seq in chain.hashes:
            return chain.hashes[seq], chain.prevs.get(seq)
        if self.store is None or seq > chain.highest or seq < 0 or seq > chain.highest - self.window:
            return None, None
        found = self.store.batch_hashes(b.site, b.gateway, b.chain, seq, seq)  # type: ignore[arg-type]
        return found.get(seq), None

    def observe(self, b: StoredBatch, now_ms: int | None = None) -> str:
        """Check a verified batch's links and, when it is "new", remember them (`examine`, then
        `admit`): "new" or "replay"; raises WireFormatError("chain_fork")."""
        verdict = self.examine(b, now_ms)
        if verdict == "new":
            self.admit(b, now_ms)
        return verdict

    def examine(self, b: StoredBatch, now_ms: int | None = None) -> str:
        """Check a verified batch's links without remembering them: "new" or "replay"; raises
        WireFormatError("chain_fork"). Replays, forks and new chains are recorded here.

        Admission examines a batch first and `admit`s it only once its message is admitted whole:
        a message refused after this (an `internal_error`) must leave no trace in the chain, or
        its next copy (the broker's redelivery after a reconnect, the gateway's republication)
        would be taken for a replay and its readings dropped as duplicates of readings that were
        never stored."""
        if b.chain is None:
            return "new"
        with self._lock:
            chain = self._chains.get((b.site, b.gateway, b.chain))
            if (chain is not None and b.seq == chain.highest + 1 and b.seq not in chain.hashes
                    and chain.hashes.get(b.seq - 1) == b.prev and b.seq + 1 not in chain.prevs):
                # The rule (the next batch of a chain, linked to the one before it, which is in
                # memory): every check below passes and nothing is recorded.
                return "new"
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        with self._lock:
            known_chains = self._gateway_chains.get((b.site, b.gateway), set())
            fresh_chain = b.chain not in known_chains
            chain = self._chain(b.site, b.gateway, b.chain)
            if fresh_chain and known_chains - {b.chain}:
                self._event(ChainEvent(b.site, b.gateway, b.chain, "new_chain", b.seq, b.seq, now_ms,
                                       f"{b.gateway} started chain {b.chain} at batch {b.seq} (prev "
                                       f"{b.prev or 'none'}); its other chains: {', '.join(sorted(known_chains))}. "
                                       "The gateway lost its chain state: batches after the old chain's last "
                                       "one may be missing"))
            same, _ = self._known(b, chain, b.seq)
            if same is not None:
                if same == b.hash:
                    self._event(ChainEvent(b.site, b.gateway, b.chain, "replay", b.seq, b.seq, now_ms,
                                           f"batch {b.seq} of {b.gateway} received again (same content)"))
                    return "replay"
                self._fork(b, now_ms, f"batch {b.seq} of {b.gateway} chain {b.chain} differs from the batch "
                                      f"{b.seq} admitted before (hash {same[:16]}…, now {b.hash[:16]}…)")
            before, _ = self._known(b, chain, b.seq - 1)
            if before is not None and b.prev != before:
                self._fork(b, now_ms, f"batch {b.seq} of {b.gateway} names {str(b.prev)[:16]}… as its "
                                      f"predecessor, but batch {b.seq - 1} admitted is {before[:16]}…")
            if b.seq + 1 in chain.prevs and chain.prevs[b.seq + 1] != b.hash:
                self._fork(b, now_ms, f"batch {b.seq + 1} of {b.gateway} names {str(chain.prevs[b.seq + 1])[:16]}… "
                                      f"as its predecessor, not this batch {b.seq} ({b.hash[:16]}…)")
            return "new"

    def admit(self, b: StoredBatch, now_ms: int | None = None) -> None:
        """Remember the links of a batch `examine` found "new", whose message was admitted: the
        next batch links to it, a gap before it is suspected, a gap it falls in is filled."""
        if b.chain is None:
            return
        with self._lock:
            chain = self._chains.get((b.site, b.gateway, b.chain))
            if (chain is not None and b.seq == chain.highest + 1 and b.seq not in chain.hashes
                    and chain.hashes.get(b.seq - 1) == b.prev):
                # the rule (`examine`): the next batch of its chain; only remember it
                chain.hashes[b.seq], chain.prevs[b.seq] = b.hash, b.prev
                chain.highest = b.seq
                if len(chain.hashes) > self.window * 5 // 4:
                    self._trim(chain)
                return
            self._admit(b, self._chain(b.site, b.gateway, b.chain),
                        now_ms if now_ms is not None else int(time.time() * 1000))

    def _admit(self, b: StoredBatch, chain: _Chain, now_ms: int) -> None:
        if chain.highest >= 0 and b.seq > chain.highest + 1:
            chain.suspected.append([chain.highest + 1, b.seq - 1, now_ms])
        elif b.seq < chain.highest:
            chain.suspected = _without(chain.suspected, b.seq)
            for e in [e for e in chain.recorded if e.seq_lo <= b.seq <= e.seq_hi]:
                self._fill(b.site, chain, e, b.seq, now_ms)
        chain.hashes[b.seq], chain.prevs[b.seq] = b.hash, b.prev
        chain.highest = max(chain.highest, b.seq)
        if len(chain.hashes) > self.window * 5 // 4:
            self._trim(chain)

    def _trim(self, chain: _Chain) -> None:
        keep = chain.highest - self.window
        chain.hashes = {s: h for s, h in chain.hashes.items() if s > keep}
        chain.prevs = {s: p for s, p in chain.prevs.items() if s > keep}

    def _fill(self, site: str, chain: _Chain, gap: ChainEvent, seq: int, now_ms: int) -> None:
        """A batch inside a recorded gap arrived: once the whole gap is filled, it is resolved."""
        filled = {s for s in range(gap.seq_lo, gap.seq_hi + 1) if s in chain.hashes or s == seq}
        if len(filled) == gap.seq_hi - gap.seq_lo + 1:
            chain.recorded.remove(gap)
            self._event(gap._replace(resolved_ms=now_ms, detail=gap.detail + "; filled late"))
            log.warning("chain gap closed: batches %d..%d of %s arrived late", gap.seq_lo, gap.seq_hi, gap.gateway)

    def _fork(self, b: StoredBatch, now_ms: int, detail: str) -> None:
        event = ChainEvent(b.site, b.gateway, b.chain or "", "fork", b.seq, b.seq, now_ms, detail)
        self._event(event)
        self.forks.append(event)
        log.error("ALARM: chain fork: %s; the batch is quarantined (chain_fork)", detail)
        raise WireFormatError("chain_fork", detail)

    def _event(self, event: ChainEvent) -> None:
        self.events.append(event)
        if event.resolved_ms is None:
            self.counts[event.kind] = self.counts.get(event.kind, 0) + 1

    def drain(self) -> list[ChainEvent]:
        """The events recorded since the last drain (admission puts them in its cycle)."""
        with self._lock:
            out, self.events = self.events, []
        return out

    # -- periodic (engine thread) --------------------------------------------------------

    def check(self, now_ms: int | None = None) -> list[ChainEvent]:
        """Suspected gaps older than the grace: confirmed against the store and recorded (alarm);
        recorded gaps: closed when the store has every batch. Returns the events to write."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        out: list[ChainEvent] = []
        with self._lock:
            for (site, gateway, chain_id), chain in self._chains.items():
                due = [g for g in chain.suspected if now_ms - g[2] >= self.gap_grace_ms]
                for lo, hi, detected in due:
                    chain.suspected.remove([lo, hi, detected])
                    stored = self._stored(site, gateway, chain_id, lo, hi)
                    for a, z in _ranges([s for s in range(lo, hi + 1) if s not in stored and s not in chain.hashes]):
                        event = ChainEvent(site, gateway, chain_id, "gap", a, z, detected,
                                           f"batches {a}..{z} of {gateway} (chain {chain_id}) never arrived: batch "
                                           f"{z + 1} names the hash of batch {z} as its predecessor")
                        chain.recorded.append(event)
                        self.counts["gap"] += 1
                        out.append(event)
                        log.error("ALARM: chain gap: %s", event.detail)
                for gap in list(chain.recorded):
                    stored = self._stored(site, gateway, chain_id, gap.seq_lo, gap.seq_hi)
                    if all(s in stored or s in chain.hashes for s in range(gap.seq_lo, gap.seq_hi + 1)):
                        chain.recorded.remove(gap)
                        out.append(gap._replace(resolved_ms=now_ms, detail=gap.detail + "; filled late"))
        return out

    def _stored(self, site: str, gateway: str, chain: str, lo: int, hi: int) -> set[int]:
        if self.store is None or hi - lo > 100_000:
            return set()
        return set(self.store.batch_hashes(site, gateway, chain, lo, hi))

    # -- what the API and /metrics show ----------------------------------------------------

    def alarms(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Open (recorded) gaps, and forks of the last 24 h: what an operator must look at."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        with self._lock:
            gaps = [e for c in self._chains.values() for e in c.recorded]
            forks = [e for e in self.forks if now_ms - e.detected_ms < FORK_ALARM_MS]
        return [e._asdict() for e in sorted([*gaps, *forks], key=lambda e: e.detected_ms)]

    def suspected(self) -> int:
        """Batches missing but still within the grace (likely on their way)."""
        with self._lock:
            return sum(g[1] - g[0] + 1 for c in self._chains.values() for g in c.suspected)


def _without(gaps: list[list[int]], seq: int) -> list[list[int]]:
    out = []
    for lo, hi, detected in gaps:
        if lo <= seq <= hi:
            if seq > lo:
                out.append([lo, seq - 1, detected])
            if seq < hi:
                out.append([seq + 1, hi, detected])
        else:
            out.append([lo, hi, detected])
    return out


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
