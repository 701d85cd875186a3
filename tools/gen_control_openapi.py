"""Write docs/control-openapi.json, the control API's OpenAPI document (a test keeps the
committed file equal to what `itpump serve --control` publishes at /openapi.json).

    python -m itpump.tools.gen_control_openapi
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "docs" / "control-openapi.json"


def document() -> dict[str, object]:
    """The OpenAPI document of the control API (it does not depend on the farm's contents)."""
    from itpump.emulator.control.app import create_app
    from itpump.emulator.farm import PortSpec, PumpFarm
    from itpump.emulator.scenario import load_scenario

    farm = PumpFarm(load_scenario("clinic-ready"), port=PortSpec("null"), speed=0.0, warmup_h=0)
    return create_app(farm).openapi()


def main() -> int:
    """Write the file; print where."""
    OUT.write_text(json.dumps(document(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
