"""Batch signatures at ingest: each readings message is checked before admission learns from it.

Per site, `signatures` (tanji/site.py) says what is admitted:
- `required`: only batches signed by a key the site file registers for the publishing gateway;
- `preferred` (default): unsigned batches too, but a signed batch only when it verifies (a
  gateway for which the site file registers no key yet counts as unsigned);
- `off`: nothing is checked and no evidence is kept (the cost of today's ingest, for comparison).

Quarantine reasons: `unsigned` (required), `unknown_key` (no such key registered for this
gateway), `bad_signature` (the signature does not verify: an altered reading, a forgery),
`key_expired` / `revoked_key` (the key may not vouch for readings taken when these were).
A batch quarantined for its signature is not confirmed to its gateway (end-to-end delivery),
so the gateway keeps its own copy and sends it again: a forged or altered copy never deletes
the genuine one, and after an operator registers a key the waiting batches are admitted.

Cost. The readings are hashed as the bytes that travelled, the same bytes then parsed into
what admission stores, once: the pre-pass reads only the members before the readings
(`batch_decoder.decode_head`; any other layout is decoded whole there, `decode_signed`) and
admission parses the payload on its own turn, as `off` does (`BatchSignatures.decode`). Ed25519
verification (PyNaCl, ~65 µs a check on the development machine, docs/audit.md) is paid once per
*run*: the batches of one gateway's chain that arrive in one cycle, each naming the previous one's hash
(`prev`), are vouched for by the newest one's signature, because that signature covers its
header, which names its predecessor's hash, which covers that predecessor's header, and so on
(a standard hash-chain argument: changing any of them changes a hash its successor signed).
A run whose newest signature fails loses that batch (`bad_signature`) and the run before it
is checked the same way. `tanji audit verify` checks
every signature and applies the same rule to report which batches were vouched for by a
successor.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from accounting.ingest import batch_decoder
from accounting.ingest.batch_decoder import Batch, Sig
from accounting.ingest.subscriber import InboundMessage
from accounting.store.evidence import StoredBatch
from tanji import signed_batch
from tanji.errors import WireFormatError
from tanji.gateway_keys import RegisteredKey
from tanji.site import Site

log = logging.getLogger(__name__)

#: Refusals after which the gateway is told the batch is stored (its fate is final: kept in
#: quarantine); any other refusal leaves the gateway's copy in its spool, to be sent again.
FINAL_REFUSALS = frozenset({"key_expired", "revoked_key", "chain_fork"})


@dataclass(slots=True)
class Checked:
    """What the signature check says about one message: refused (`reason`), or admissible with
    the batch record to keep (`record`, its readings' time span still to be filled in)."""

    reason: str | None = None
    detail: str = ""
    key: RegisteredKey | None = None
    site: str = ""
    gateway: str = ""
    seq: int = 0
    chain: str | None = None
    prev: str | None = None
    hash: str = ""
    digest: str = ""
    sig: str | None = None
    readings: bytes | memoryview = b""  # a view into the message (batch_decoder.decode_head)
    vouched: bool = False  # its content is vouched for by a later batch's signature
    member: Any = None  # the batch's `sig` member (Sig or UNSET) as `prepare` read it: `check` compares


@dataclass
class SignatureStats:
    """Counts since start: batches verified, Ed25519 checks actually run, unsigned admitted."""

    verified_batches: int = 0
    signature_checks: int = 0
    vouched_by_chain: int = 0
    unsigned_batches: int = 0
    refused: dict[str, int] = field(default_factory=dict)


def verify_signature(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is the Ed25519 signature of `message` by the key `public_raw`.

    PyNaCl (libsodium) verifies, here and in `KeyRing`: ~65 µs a check against ~120 µs for
    `cryptography` (OpenSSL) on the development machine, and a check is paid per run of batches
    at ingest. The gateway signs with `cryptography` (RFC 8032 signatures either way)."""
    try:
        VerifyKey(public_raw).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


class KeyRing:
    """The registered gateway keys of the service's sites, with their loaded public keys."""

    def __init__(self, sites: dict[str, Site]) -> None:
        self.modes = {sid: s.signatures for sid, s in sites.items()}
        self._keys: dict[tuple[str, str], RegisteredKey] = {}
        self._public: dict[tuple[str, str], VerifyKey] = {}
        self.keyed: set[tuple[str, str]] = set()  # (site, gateway) that register at least one key
        for sid, site in sites.items():
            for g in site.gateways:
                if g.keys:
                    self.keyed.add((sid, g.id))
                for k in g.keys:
                    self._keys[(sid, k.key_id)] = k
                    self._public[(sid, k.key_id)] = VerifyKey(k.raw)
                if site.signatures == "required" and not g.keys:
                    log.error("site %s requires signatures but registers no key for gateway %s: its batches are "
                              "quarantined until one is (tanji gateway keygen, docs/audit.md)", sid, g.id)

    def key(self, site: str, key_id: str) -> RegisteredKey | None:
        return self._keys.get((site, key_id))

    def verify(self, site: str, key_id: str, signature: bytes, message: bytes) -> bool:
        try:
            self._public[(site, key_id)].verify(message, signature)
        except (BadSignatureError, ValueError):  # ValueError: not 64 bytes
            return False
        return True


class BatchSignatures:
    """Checks one cycle's readings messages (`prepare`), then answers per message (`check`)."""

    def __init__(self, sites: dict[str, Site]) -> None:
        self.keys = KeyRing(sites)
        self.stats = SignatureStats()
        self._checked: dict[int, Checked] = {}
        self._decoded: dict[int, Batch | WireFormatError] = {}

    def verifies(self, site_id: str) -> bool:
        return self.keys.modes.get(site_id, "off") != "off"

    # -- the cycle's pre-pass ----------------------------------------------------------------

    def prepare(self, messages: Sequence[InboundMessage], now_ms: int | None = None) -> None:
        """Hash and check the signatures of a cycle's readings messages (one Ed25519 check per
        run). A gateway's own layout is read here only up to its readings
        (`batch_decoder.decode_head`), whose parse waits for admission (`decode`): parsed here, a
        cycle's readings were out of the CPU's cache again by the time admission used them. Any
        other layout is decoded here whole, once (`batch_decoder.decode_signed`)."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self._checked, self._decoded = {}, {}
        pending: dict[tuple[str, str, str], list[tuple[int, Checked, Sig]]] = {}
        for index, m in enumerate(messages):
            parts = m.topic.split("/")
            if len(parts) != 5 or parts[4] != "readings" or not self.verifies(parts[2]):
                continue
            try:
                head = batch_decoder.decode_head(m.payload, parts[2], parts[3])
                if head is not None:
                    batch, raw = head
                else:
                    batch, raw = batch_decoder.decode_signed(m.payload, parts[2], parts[3], now_ms)
                    self._decoded[index] = batch
            except WireFormatError as exc:  # admission raises it, after its own topic checks
                self._decoded[index] = exc
                continue
            except Exception:  # noqa: BLE001 - admission decodes it again and quarantines what fails
                log.exception("decoding a message on %.200r for its signature failed", m.topic)
                continue
            if raw is None:
                continue  # check() falls back to the per-message path
            checked = self._start(batch.site, batch.gateway, batch.seq, batch.sig, raw)
            checked.member = batch.sig
            self._checked[index] = checked
            if checked.reason is None and checked.key is not None and isinstance(batch.sig, Sig):
                pending.setdefault((batch.site, batch.gateway, batch.sig.chain), []).append(
                    (index, checked, batch.sig))
        for run in pending.values():
            self._verify_runs(sorted(run, key=lambda item: item[1].seq))

    def decode(self, index: int, payload: bytes, site: str, gateway: str, now_ms: int) -> Batch:
        """Message `index` of the cycle `prepare` saw, decoded for admission (`batch_decoder.decode_batch`'s
        answer); raises the wire-format refusal. A batch `prepare` decoded whole is taken from it
        (freed once admitted); one it read only up to its readings is parsed now. Should the fast
        decoder refuse that one and the reference accept it, its prepared check is dropped and
        `check` checks the reference's reading on its own, as for any other layout."""
        found = self._decoded.pop(index, None)
        if isinstance(found, WireFormatError):
            raise found
        if found is not None:
            return found
        if index in self._checked:
            batch = batch_decoder.decode_fast(payload, site, gateway, now_ms)
            if batch is not None:
                return batch
            del self._checked[index]
        return batch_decoder.decode_batch(payload, site, gateway, now_ms)

    def _start(self, site: str, gateway: str, seq: int, sig: Any, readings: Any) -> Checked:
        """Everything but the Ed25519 check: key lookup, readings digest, header hash."""
        digest = signed_batch.readings_digest(readings)  # keeps the GIL (its docstring says why)
        c = Checked(site=site, gateway=gateway, seq=seq, digest=digest)
        if not isinstance(sig, Sig):  # kept without its bytes (`check`): no reference to them either
            c.hash = signed_batch.batch_hash(signed_batch.header(site, gateway, seq, "-", "-", None, digest))
            if self.keys.modes[site] == "required":
                c.reason, c.detail = "unsigned", f"site {site} requires signed batches; {gateway} batch {seq} has no sig"
            return c
        if self.keys.modes[site] == "preferred" and (site, gateway) not in self.keys.keyed:
            # The gateway signs, but the site file registers no key for it yet: nothing to
            # verify against, so the batch counts as unsigned (a gateway opts in by its keys).
            return self._start(site, gateway, seq, msgspec.UNSET, readings)
        c.chain, c.prev, c.sig, c.readings = sig.chain, sig.prev, sig.sig, readings
        key = self.keys.key(site, sig.key)
        if key is None or key.gateway != gateway:
            owner = f" (it is {key.gateway}'s)" if key is not None else ""
            c.reason, c.detail = "unknown_key", (f"batch {seq} of {gateway} is signed with key {sig.key}, which the "
                                                 f"site file of {site} does not register for {gateway}{owner}")
            return c
        c.key = key
        c.hash = signed_batch.batch_hash(signed_batch.header(site, gateway, seq, sig.chain, sig.key, sig.prev, digest))
        return c

    def _verify_runs(self, batches: list[tuple[int, Checked, Sig]]) -> None:
        """Split one chain's batches of the cycle into linked runs; check each run's newest signature."""
        run: list[tuple[int, Checked, Sig]] = []
        for item in batches:
            if run and not (item[1].seq == run[-1][1].seq + 1 and item[2].prev == run[-1][1].hash):
                self._verify_run(run)
                run = []
            run.append(item)
        if run:
            self._verify_run(run)

    def _check_one(self, c: Checked, sig: Sig) -> bool:
        self.stats.signature_checks += 1
        head = signed_batch.header(c.site, c.gateway, c.seq, sig.chain, sig.key, sig.prev, c.digest)
        return self.keys.verify(c.site, sig.key, base64.b64decode(sig.sig), head)  # msgspec checked its shape

    def _verify_run(self, run: list[tuple[int, Checked, Sig]]) -> None:
        """The newest signature vouches for the whole run; when it fails, that batch is refused
        and the run before it is checked the same way (n checks at worst, 1 as a rule)."""
        while run:
            _, head, head_sig = run[-1]
            if self._check_one(head, head_sig):
                for _, c, _ in run[:-1]:
                    c.vouched = True
                return
            head.reason, head.detail = "bad_signature", (
                f"batch {head.seq} of {head.gateway}: the signature does not verify with key {head_sig.key} (the "
                "readings or header were changed after signing, or another key signed it)")
            run = run[:-1]

    # -- per message, during admission --------------------------------------------------------

    def check(self, index: int, message: InboundMessage, site: str, gateway: str,
              batch: Any) -> StoredBatch | None:
        """The batch record to keep for an admissible message (None when its site verifies
        nothing); raises WireFormatError with the refusal reason."""
        if not self.verifies(site):
            return None
        c = self._checked.pop(index, None)
        if c is not None and (c.seq != batch.seq or c.member != batch.sig):
            c = None  # not what prepare read (decode_head says why it always is): check it alone
        if c is None:  # the fast decoder refused it and the reference accepted it: check it here
            raw = signed_batch.raw_member(message.payload)
            sig = batch.sig if isinstance(batch.sig, Sig) else msgspec.UNSET
            c = self._start(site, gateway, batch.seq, sig, raw or b"")
            if c.reason is None and c.key is not None and isinstance(sig, Sig) and not self._check_one(c, sig):
                c.reason, c.detail = "bad_signature", f"batch {batch.seq} of {gateway}: the signature does not verify"
        readings = batch.readings
        # sorted(): ~1.3 µs for a batch's 100 stamps in the order a gateway polls (ascending, or
        # equal), where min() and max() took ~5 (timsort sees one run and compares ints natively)
        stamps = sorted([r.ts_ms for r in readings])
        oldest, newest = (stamps[0], stamps[-1]) if stamps else (0, 0)
        if c.reason is None and c.key is not None and readings:
            refusal = c.key.refusal(oldest, newest)
            if refusal is not None:
                c.reason, c.detail = refusal
        if c.reason is not None:
            self.stats.refused[c.reason] = self.stats.refused.get(c.reason, 0) + 1
            raise WireFormatError(c.reason, c.detail)
        if c.key is not None:
            self.stats.verified_batches += 1
            self.stats.vouched_by_chain += c.vouched
        else:
            self.stats.unsigned_batches += 1
        # An unsigned batch is recorded without its readings' bytes: it is no evidence, and
        # keeping them would write every unsigned reading twice; its record still says which
        # readings of which window are not vouched for (evidence_complete).
        return StoredBatch(site, gateway, c.seq, c.hash, c.chain, c.key.key_id if c.key else None, c.prev, c.sig,
                           oldest, newest, len(readings), message.received_ms, c.readings if c.key else b"")

    def to_dict(self) -> dict[str, Any]:
        s = self.stats
        return {"verified_batches": s.verified_batches, "signature_checks": s.signature_checks,
                "vouched_by_chain": s.vouched_by_chain, "unsigned_batches": s.unsigned_batches,
                "refused": dict(s.refused)}
