"""The whole system of one plant on one machine: broker, simulated plant, gateways, accounting.

Everything a production deployment spreads over boxes, started in this process in the order
data flows back from it (broker, plant, accounting, then the gateways that publish to it) and
stopped in reverse. The plant's site file is moved onto this machine first: every Modbus TCP
meter and the broker to a free local port (meters sharing a port still share one), every
RS-485 bus onto a linked pair of pseudo-terminals (`demo.serial_line`), so a demo never
collides with a real installation and needs no serial hardware.
"""

from __future__ import annotations

import logging
import socket
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from accounting.embedded_broker import EmbeddedBroker
from accounting.ingest.hot_path import log_passes
from accounting.service import AccountingService
from accounting.store.checkpoints import CheckpointStore
from accounting.store.sqlite import SqliteStore
from demo.history import continue_from_store, seed_history
from demo.serial_line import LinkedPtys
from gateway.service import GatewayService
from simulators.plant import PlantSimulator
from simulators.scenario import Scenario
from tanji.site import Broker, Site

log = logging.getLogger("tanji.demo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_site(site: Site, bus_devices: dict[str, str]) -> tuple[Site, Broker]:
    """The site with its TCP meters and broker on free local ports and its buses on `bus_devices`."""
    ports: dict[tuple[str | None, int | None], int] = {}
    addresses = {}
    for meter in site.meters:
        if meter.transport == "tcp":
            addresses[meter.id] = ("127.0.0.1", ports.setdefault((meter.host, meter.port), free_port()))
    broker = Broker(host="127.0.0.1", port=free_port(), mqtt_version="3.1.1")  # amqtt speaks no MQTT 5
    return site.with_meter_addresses(addresses).with_bus_devices(bus_devices).with_broker(broker), broker


class DemoStack:
    """Start with `start()` (or `with`); `service` is the accounting service, `site` the local site."""

    def __init__(self, scenario: Scenario, workdir: Path, *, seed: int | None = None,
                 speed: float | None = None, plant_start_s: float | None = None, history_months: int = 0,
                 client_id: str = "tanji-demo-accounting") -> None:
        """`history_months`: simulate the plant's past from that many months back into the store
        first (`demo.history`), unless the store has readings, which the plant then continues."""
        self.scenario = scenario
        self.history_months = history_months
        self.workdir = workdir
        self.seed = seed
        self.speed = speed
        self.plant_start_s = plant_start_s
        self.client_id = client_id
        self._parts = ExitStack()
        self.site: Site = scenario.site
        self.plant: PlantSimulator | None = None
        self.service: AccountingService | None = None
        self.gateways: list[GatewayService] = []

    def start(self) -> DemoStack:
        parts = self._parts
        try:
            lines = {b.id: parts.enter_context(LinkedPtys(b.id)) for g in self.scenario.site.gateways
                     for b in g.buses}
            self.site, broker = local_site(self.scenario.site, {bus: line.ends[1] for bus, line in lines.items()})
            for bus, line in lines.items():
                log.info("RS-485 bus %s: simulator at %s, gateway at %s", bus, *line.ends)

            embedded = EmbeddedBroker(broker.host, broker.port)
            embedded.start()
            parts.callback(embedded.stop)

            store = SqliteStore(self.workdir / "tanji.sqlite")
            local = replace(self.scenario, site=self.site)
            self.plant = PlantSimulator(local, seed=self.seed, time_scale=self.speed, start_s=self.plant_start_s,
                                        serial_devices={bus: line.ends[0] for bus, line in lines.items()})
            if store.count_readings(self.site.id):
                continue_from_store(store, self.site.id, self.plant)
            elif self.history_months > 0:
                seed_history(local, store, self.plant, seed=self.seed, months=self.history_months)
            self.plant.start()
            parts.callback(self.plant.stop)

            log.info("accounting: preparing the engine (compiles numba kernels on the first run)")
            log_passes(log)
            self.service = AccountingService([self.site], store,
                                             broker_host=broker.host, broker_port=broker.port,
                                             client_id=self.client_id, mqtt_version=broker.mqtt_version,
                                             checkpoints=CheckpointStore(self.workdir / "checkpoints.sqlite"))
            self.service.start()
            parts.callback(self.service.stop)
            # The gateways start once the broker keeps accounting's session: a first session's
            # readings published before its SUBACK would be dropped and only come again when the
            # gateway republishes what accounting never confirmed.
            if not self.service.wait_connected(60):
                log.warning("accounting is not subscribed to the broker after 60 s; starting the gateways anyway")

            for gateway in self.site.gateways:
                service = GatewayService(self.site, gateway.id,
                                         spool_path=self.workdir / f"spool-{gateway.id}.sqlite",
                                         broker=broker)
                service.start()
                parts.callback(service.stop)
                self.gateways.append(service)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every part started, the last first; one that fails to stop does not keep the others running."""
        try:
            self._parts.close()
        except Exception:
            log.exception("while stopping the demo")

    def __enter__(self) -> DemoStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
