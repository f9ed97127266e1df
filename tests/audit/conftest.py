"""The audit tests use the gateway tests' helpers: simulated plants, MQTT collectors, gateway processes."""

from tests.gateway.conftest import collector_factory, gateway_process, plant_factory  # noqa: F401
