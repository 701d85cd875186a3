"""Sans-IO telemetry protocol: bytes in, typed events out; typed messages in, bytes out."""
