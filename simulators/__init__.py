"""Simulated meters, PV inverters and PLC counters of whole plants, over Modbus TCP and RTU.

Test, benchmark and demo equipment only (never needed in production): start with
simulators.plant.PlantSimulator or `tanji simulate`; docs/simulators.md explains the rest.
"""
