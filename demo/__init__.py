"""`tanji demo`: the whole system on one machine (simulated plant, gateway, broker, accounting, API).

The one part allowed to import every other part (simulators, gateway, accounting); nothing
imports it but the `tanji` command's dispatch table.
"""
