"""Chain breaks in the operator's alarm list: a gateway's missing batches and forked histories.

The chain tracker (`accounting.ingest.chain`) finds gaps and forks and records them with the
evidence (docs/audit.md); an operator must also *see* them where every other alarm is, acknowledge
them and find them again after a restart. So, on each chain check, the tracker's open alarms are
mirrored into the durable alarm log (`accounting.store.alarms`):

- a **gap** (batches that never arrived, still missing after the grace) is a condition,
  `chain_gap`: it clears itself when the batches arrive late (the gateway republished them), and
  stays up while they are missing, across restarts (the tracker restores open gaps from the store);
- a **fork** (two different histories signed with one gateway's key) is an event, `chain_fork`:
  it stays until someone acknowledges it, and an acknowledged fork is not raised again.

Subjects name the gateway, its chain and the batches, so two breaks are two alarms.

Damage to the evidence log that `EvidenceLog.open` finds at start (a segment cut short, altered
or lost: accounting/store/evidence_log.py) breaks the same promise, that a footprint can be
verified back to the meter, so it is raised here too: `evidence_damaged`, an event naming the
segment and the byte, raised for every site whose batches are signed (the log holds them all),
latching like a fork: it is found at one start only when the segment's end is intact, so it
stays until acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from accounting.store.alarms import AlarmStore

GAP, FORK, EVIDENCE = "chain_gap", "chain_fork", "evidence_damaged"


def chain_subject(event: Mapping[str, Any]) -> str:
    """`gw-1 chain 3f2a… batches 3..5`: which gateway, which of its chains, which batches."""
    lo, hi = event["seq_lo"], event["seq_hi"]
    span = f"batch {lo}" if lo == hi else f"batches {lo}..{hi}"
    return f"{event['gateway']} chain {event['chain']} {span}"


def sync_chain_alarms(log: AlarmStore, open_events: Iterable[Mapping[str, Any]], site_ids: Iterable[str],
                      now_ms: int | None = None) -> None:
    """Raise the tracker's open gaps and recent forks in `log`; clear the gaps no longer open.

    `open_events`: `ChainTracker.alarms()` (ChainEvent dicts with kind `gap` or `fork`);
    `site_ids`: the sites whose chains are tracked (their gap alarms not in `open_events` end).
    """
    open_gaps: dict[str, set[str]] = {site: set() for site in site_ids}
    for event in open_events:
        site, subject = event["site"], chain_subject(event)
        if event["kind"] == "gap":
            open_gaps.setdefault(site, set()).add(subject)
            log.raise_alarm(site, GAP, subject, severity="alarm", message=_gap_message(event),
                            detail=_detail(event), now_ms=now_ms)
        elif event["kind"] == "fork" and not log.ever_raised(site, FORK, subject):
            log.raise_alarm(site, FORK, subject, severity="alarm", latching=True, message=_fork_message(event),
                            detail=_detail(event), now_ms=now_ms)
    for site, subjects in open_gaps.items():
        for subject in log.active_subjects(site, GAP) - subjects:
            log.clear_alarm(site, GAP, subject, now_ms=now_ms)


def _detail(event: Mapping[str, Any]) -> dict[str, Any]:
    return {k: event[k] for k in ("gateway", "chain", "seq_lo", "seq_hi", "detected_ms", "detail")}


def _gap_message(event: Mapping[str, Any]) -> str:
    return (f"{chain_subject(event)} never arrived ({event['detail']}): their readings are missing "
            "from the footprints until the gateway sends them again; check its spool")


def _fork_message(event: Mapping[str, Any]) -> str:
    return (f"{chain_subject(event)}: a second history signed with this gateway's key ({event['detail']}); "
            "quarantined. A copied key or a spool restored from a backup: check the gateway and rotate its key")


def raise_evidence_alarms(log: AlarmStore, damage: Iterable[Mapping[str, Any]], site_ids: Iterable[str],
                          now_ms: int | None = None) -> None:
    """Raise each finding of `EvidenceLog.damage` once per signing site (module docstring)."""
    sites = list(site_ids)
    for d in damage:
        subject = f"{d['segment']} byte {d['offset']}"
        for site in sites:
            if not log.ever_raised(site, EVIDENCE, subject):
                log.raise_alarm(site, EVIDENCE, subject, severity="alarm", latching=True,
                                message=f"evidence log segment {d['detail']}: the signed batches recorded there fail "
                                        "export until it is restored from a backup (keep a copy as it is)",
                                detail=dict(d), now_ms=now_ms)
