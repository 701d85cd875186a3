"""The rig's control plane over served pumps: an HTTP/JSON API (`app`), its schema
(`schema`) and a Python client (`client`).

Out of band, beside the telemetry ports: simulated time, faults, the telemetry head, truth,
what the pump would report, snapshots. It calls the same `PumpFarm` / `ServedPump` methods a
Python rig and the pytest plugin call: one implementation, several front ends.
"""
