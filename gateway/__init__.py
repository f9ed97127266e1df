"""The edge gateway: polls a site's Modbus meters, spools every reading durably, publishes it over MQTT."""
