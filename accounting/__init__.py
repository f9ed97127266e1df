"""Accounting: readings from MQTT into a store and the engine, footprints served over HTTP."""
