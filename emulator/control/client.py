"""A Python client for the control API (blocking, over httpx).

    from itpump.emulator.control.client import ControlClient
    with ControlClient("http://127.0.0.1:8700") as rig:
        serial = rig.pumps()[0].serial
        rig.advance(hours=24)
        rig.inject(serial, "occlusion")
        print(rig.truth(serial).ledger.to_csf_mcg, rig.reported(serial).dose_last_24h_mcg)

Answers are the API's own pydantic models (`emulator.control.schema`). A refused request
raises `ControlError` with the HTTP status and the server's explanation.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from itpump.emulator.control.schema import (
    AdvanceResult,
    ClockState,
    FaultsOut,
    HeadOut,
    LinkOut,
    PumpInfo,
    ReportedOut,
    SnapshotOut,
    TruthOut,
)

M = TypeVar("M", bound=BaseModel)


class ControlError(Exception):
    """The control API refused a request (4xx) or failed (5xx)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class ControlClient:
    """Blocking client of one `itpump serve --control` endpoint."""

    def __init__(self, base_url: str, *, timeout_s: float = 60.0) -> None:
        """`timeout_s` bounds each request (a long advance takes a while)."""
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, json: Any = None) -> Any:
        response = self._http.request(method, path, json=json)
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ControlError(response.status_code, detail)
        return response.json()

    def _one(self, model: type[M], method: str, path: str, json: Any = None) -> M:
        return model.model_validate(self._request(method, path, json))

    def _many(self, model: type[M], method: str, path: str) -> list[M]:
        return TypeAdapter(list[model]).validate_python(self._request(method, path))  # type: ignore[valid-type]

    # ------------------------------------------------------------------ pumps and time
    def pumps(self) -> list[PumpInfo]:
        """Every served pump."""
        return self._many(PumpInfo, "GET", "/pumps")

    def pump(self, serial: str) -> PumpInfo:
        """One served pump."""
        return self._one(PumpInfo, "GET", f"/pumps/{serial}")

    def clock(self) -> ClockState:
        """The farm's simulated time and speed."""
        return self._one(ClockState, "GET", "/clock")

    def advance(self, hours: float) -> AdvanceResult:
        """Run `hours` of simulated time now."""
        return self._one(AdvanceResult, "POST", "/clock/advance", {"hours": hours})

    def advance_until_alarm(
        self, limit_hours: float | None = None, serial: str | None = None
    ) -> AdvanceResult:
        """Run simulated time until an alarm (of one pump, if named), at most `limit_hours`."""
        body: dict[str, Any] = {"until": "next_alarm"}
        if limit_hours is not None:
            body["limit_hours"] = limit_hours
        if serial is not None:
            body["serial"] = serial
        return self._one(AdvanceResult, "POST", "/clock/advance", body)

    def set_speed(self, speed: float | Literal["max"]) -> ClockState:
        """Simulated seconds per real second; 0 = stepped; "max"."""
        return self._one(ClockState, "POST", "/clock/speed", {"speed": speed})

    # ------------------------------------------------------------------ one pump
    def truth(self, serial: str) -> TruthOut:
        """What truly is now."""
        return self._one(TruthOut, "GET", f"/pumps/{serial}/truth")

    def reported(self, serial: str) -> ReportedOut:
        """What the pump would report now."""
        return self._one(ReportedOut, "GET", f"/pumps/{serial}/reported")

    def inject(self, serial: str, kind: str, value: float | None = None) -> FaultsOut:
        """Start a hardware fault now."""
        body: dict[str, Any] = {"kind": kind}
        if value is not None:
            body["value"] = value
        return self._one(FaultsOut, "POST", f"/pumps/{serial}/faults", body)

    def clear(self, serial: str, kind: str) -> FaultsOut:
        """End a hardware fault now."""
        return self._one(FaultsOut, "DELETE", f"/pumps/{serial}/faults/{kind}")

    def set_head(self, serial: str, placed: bool) -> HeadOut:
        """Place (True) or lift (False) the telemetry head."""
        return self._one(HeadOut, "POST", f"/pumps/{serial}/head", {"placed": placed})

    def link(self, serial: str) -> LinkOut:
        """The emulated link's state."""
        return self._one(LinkOut, "GET", f"/pumps/{serial}/link")

    def set_link(
        self,
        serial: str,
        *,
        corruption_rate: float | None = None,
        drop_rate: float | None = None,
    ) -> LinkOut:
        """Link fault probabilities from now on (None keeps the current one)."""
        body = {
            k: v
            for k, v in (("corruption_rate", corruption_rate), ("drop_rate", drop_rate))
            if v is not None
        }
        return self._one(LinkOut, "POST", f"/pumps/{serial}/link", body)

    # ------------------------------------------------------------------ whole state
    def snapshot(self, serial: str) -> SnapshotOut:
        """Keep the pump's whole state now."""
        return self._one(SnapshotOut, "POST", f"/pumps/{serial}/snapshot")

    def snapshots(self) -> list[SnapshotOut]:
        """Every kept snapshot."""
        return self._many(SnapshotOut, "GET", "/snapshots")

    def delete_snapshot(self, snapshot_id: str) -> list[SnapshotOut]:
        """Forget a snapshot."""
        return self._many(SnapshotOut, "DELETE", f"/snapshots/{snapshot_id}")

    def restore(self, serial: str, snapshot_id: str) -> PumpInfo:
        """Put the pump back into a snapshot's state."""
        return self._one(PumpInfo, "POST", f"/pumps/{serial}/restore", {"snapshot": snapshot_id})

    def reset(self, serial: str) -> PumpInfo:
        """A fresh pump in the scenario's state after the warm-up."""
        return self._one(PumpInfo, "POST", f"/pumps/{serial}/reset")

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document the server publishes."""
        result: dict[str, Any] = self._request("GET", "/openapi.json")
        return result
