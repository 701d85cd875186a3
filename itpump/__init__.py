"""itpump: emulator of an implanted programmable intrathecal drug pump, with a serial telemetry
harness and a pharmacokinetic engine.

Everything installs under this one namespace: ``itpump.emulator`` (the physical world, PK,
transports, farm and control plane), ``itpump.firmware_stubs`` (what runs inside the pump),
``itpump.protocol`` (the sans-IO telemetry protocol), ``itpump.programmer`` (the reference
programmer) and ``itpump.tools`` (the command line). In the source tree the sub-packages are
the repository's top-level folders; ``itpump/`` holds links to them, so the same import names
work from a checkout and from an installed wheel.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("itpump")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
