"""A fleet of virtual gateways publishing wire-format v1 readings straight to MQTT.

Accounting's load tests need thousands of meters' worth of traffic without thousands of
Modbus polls: this skips Modbus and the gateway and publishes what N gateways would, batch
for batch (tanji.wire.encode_batch, QoS 1, one readings topic per gateway). Meter physics
are the same models as the plant's, so the fleet has a ground truth too.

    fleet = Fleet("127.0.0.1", 1883, gateways=100, meters_per_gateway=20)
    stats = fleet.publish(rounds=60)          # 60 polls of every meter, back-filled to now
    fleet.truth().total("fleet-gw-007-m03", "energy_import_kwh")

With `signers` (gateway id → a signing key, `gateway.signing_key.SigningKey` or anything with
`key_id`, `public_key` and `sign(message)`), each gateway signs and chains its batches exactly as a gateway
does (`tanji.signed_batch`, docs/audit.md): one chain per gateway, started by this fleet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from simulators.ground_truth import GroundTruth, TruthSnapshot
from simulators.load_profile import Load
from simulators.models import ElectricMeter
from simulators.randomness import derive_seed, uniform
from tanji import signed_batch
from tanji.wire import encode_batch, readings_json, readings_topic


@dataclass(frozen=True, slots=True)
class FleetStats:
    batches: int
    readings: int
    bytes: int
    seconds: float

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds if self.seconds else 0.0


def gateway_ids(site_id: str, gateways: int) -> list[str]:
    """The ids of a fleet's gateways (what its site file and topics name)."""
    return [f"{site_id}-gw-{g:03d}" for g in range(gateways)]


class Fleet:
    """`gateways` virtual gateways of `meters_per_gateway` meters each, for site `site_id`."""

    def __init__(self, host: str, port: int, *, gateways: int = 10, meters_per_gateway: int = 20,
                 site_id: str = "fleet", period_s: float = 1.0, seed: int = 0,
                 signers: Mapping[str, object] | None = None) -> None:
        self.host, self.port = host, port
        self.site_id = site_id
        self.period_s = period_s
        self.gateway_ids = gateway_ids(site_id, gateways)
        self.meter_ids = {gw: [f"{gw}-m{m:02d}" for m in range(meters_per_gateway)] for gw in self.gateway_ids}
        self.truth_record = GroundTruth()
        self.meters: dict[str, ElectricMeter] = {}
        for meter_ids in self.meter_ids.values():
            for meter_id in meter_ids:
                s = derive_seed(seed, meter_id)
                load = Load(base_kw=5 + 45 * uniform(s, 1), run_kw=0.0, noise_pct=5.0, seed=s)
                self.meters[meter_id] = ElectricMeter(meter_id, self.truth_record, 0.0, 1.0, load, s)
                self.meters[meter_id].set_shown("energy_import_kwh", round(1000 + 50000 * uniform(s, 2), 1))
        self._seq = dict.fromkeys(self.gateway_ids, 0)
        self._started = False
        self.signers = dict(signers or {})
        self._chain = {gw: signed_batch.new_chain_id() for gw in self.signers}
        self._prev: dict[str, str | None] = dict.fromkeys(self.signers)

    def _batch(self, gateway: str, ts_ms: int) -> bytes:
        readings = []
        for meter_id in self.meter_ids[gateway]:
            meter = self.meters[meter_id]
            meter.advance(ts_ms / 1000.0)
            v = meter.values(ts_ms / 1000.0)
            readings.append({"meter": meter_id, "ts_ms": ts_ms, "quality": "good",
                             "values": {"energy_import_kwh": v["energy_import_kwh"], "power_kw": v["power_kw"]}})
        seq = self._seq[gateway]
        self._seq[gateway] += 1
        signer = self.signers.get(gateway)
        if signer is None:
            return encode_batch(self.site_id, gateway, seq, readings)
        text = readings_json(readings)  # signed as published: the readings member's exact bytes
        sig, self._prev[gateway] = signed_batch.sign(signer, self.site_id, gateway, seq, self._chain[gateway],
                                                     self._prev[gateway], text.encode())
        return encode_batch(self.site_id, gateway, seq, [], sig=sig.to_json(), readings_text=text)

    def publish(self, rounds: int, *, realtime: bool = False, start_ms: int | None = None) -> FleetStats:
        """Publish `rounds` polls of every meter. Back-filled so the last round is now, unless
        `realtime` (one round per period, starting now). Returns once the broker has acked all."""
        now_ms = int(time.time() * 1000)
        period_ms = int(self.period_s * 1000)
        first_ms = start_ms if start_ms is not None else (now_ms if realtime else now_ms - (rounds - 1) * period_ms)
        if not self._started:  # the meters' time starts at the first round, not at epoch 0
            for meter in self.meters.values():
                meter.t = first_ms / 1000.0
            self._started = True
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tanji-fleet-{self.site_id}")
        client.max_inflight_messages_set(1000)
        client.connect(self.host, self.port)
        client.loop_start()
        batches = readings = size = 0
        started = time.monotonic()
        pending: list[mqtt.MQTTMessageInfo] = []
        try:
            for r in range(rounds):
                ts_ms = first_ms + r * period_ms
                # Made before their time and sent at it, as a gateway sends a poll's readings as
                # soon as it has them: the generator's own cost must not count as latency.
                payloads = [(gateway, self._batch(gateway, ts_ms)) for gateway in self.gateway_ids]
                if realtime:
                    time.sleep(max(0.0, (ts_ms - time.time() * 1000) / 1000.0))
                for gateway, payload in payloads:
                    pending.append(client.publish(readings_topic(self.site_id, gateway), payload, qos=1))
                    batches += 1
                    readings += len(self.meter_ids[gateway])
                    size += len(payload)
            for info in pending:
                info.wait_for_publish(timeout=60)
        finally:
            client.loop_stop()
            client.disconnect()
        return FleetStats(batches, readings, size, time.monotonic() - started)

    def payloads(self, rounds: int, start_ms: int) -> Iterator[tuple[str, bytes]]:
        """The batches `publish(rounds, start_ms=start_ms)` would send, made without a broker.

        A fresh fleet with the same seed makes the same bytes: what a benchmark's plain bulk
        writer stores to measure the store's own ceiling beside ingest.
        """
        if not self._started:
            for meter in self.meters.values():
                meter.t = start_ms / 1000.0
            self._started = True
        period_ms = int(self.period_s * 1000)
        for r in range(rounds):
            for gateway in self.gateway_ids:
                yield gateway, self._batch(gateway, start_ms + r * period_ms)

    def truth(self) -> TruthSnapshot:
        """Energy each virtual meter counted, up to its last published reading."""
        return self.truth_record.snapshot(max(m.t for m in self.meters.values()))

    def site_text(self, signatures: str | None = None) -> str:
        """A site file describing the fleet (for accounting's topology): the first meter of each
        gateway is its site's incomer view, the others submeters of one cost centre. The public
        key of each gateway that signs is registered; `signatures` sets the site's mode."""
        mode = f", signatures: '{signatures}'" if signatures else ""  # quoted: YAML reads off as false
        lines = [f"site: {{id: {self.site_id}, name: virtual fleet, province: Jiangsu, grid_region: East{mode}}}",
                 "gateways:"]
        for gateway, meter_ids in self.meter_ids.items():
            lines.append(f"  - id: {gateway}")
            if gateway in self.signers:
                lines.append(f"    keys:\n      - public_key: \"{self.signers[gateway].public_key}\"")
            lines.append("    meters:")
            for i, meter_id in enumerate(meter_ids):
                role = "grid_import" if i == 0 else "submeter, cost_centre: load"
                # Virtual meters are never polled, but a site file gives each device its own address.
                lines.append(f"      - {{id: {meter_id}, role: {role}, profile: eastron-sdm630, host: 127.0.0.1, "
                             f"port: {502 + i // 247}, unit_id: {i % 247 + 1}}}")
        lines.append("cost_centres:\n  - {id: load, kind: production}")
        return "\n".join(lines) + "\n"
