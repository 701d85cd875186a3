"""Shared builders for emulator and firmware tests."""

from __future__ import annotations

import dataclasses

from itpump.emulator.device_profile import DeviceProfile, load_profile
from itpump.emulator.pump import CountingEnvironment, EmulatedPump
from itpump.firmware_stubs.hal import Tone
from itpump.firmware_stubs.nvm import InMemoryNvm
from itpump.protocol.therapy import Continuous, TherapyProgram

START_EPOCH_S = 1_767_600_000.0  # 2026-01-05 08:00 UTC
CATHETER_ML = 110 * 2.6 / 1000


def make_pump(
    profile: str | DeviceProfile = "peristaltic-20", seed: int = 1, *, fill_ml: float = 20.0,
    conc: float = 500.0, prime: bool = True, battery_fraction: float = 1.0,
) -> tuple[CountingEnvironment, EmulatedPump]:
    """A pump implanted at t=0, filled, catheter programmed and (optionally) primed."""
    env = CountingEnvironment()
    prof = load_profile(profile) if isinstance(profile, str) else profile
    pump = EmulatedPump(env, prof, serial="TEST-0001", seed=seed, start_epoch_s=START_EPOCH_S,
                        catheter_volume_ml=CATHETER_ML, battery_initial_fraction=battery_fraction)
    pump.call(pump.firmware.set_catheter, 110.0, 2.6)
    if fill_ml:
        pump.refill(fill_ml, "baclofen", conc)
    if prime:
        pump.call(pump.firmware.prime)
        env.run(until=1.0)
    return env, pump


def lift_dose_limits(pump: EmulatedPump) -> None:
    """Let the pump's firmware accept any daily dose of baclofen (mechanics tests that need
    flows far above a clinical dose)."""
    library = pump.firmware.cfg.drug_library
    drugs = tuple(
        dataclasses.replace(d, max_daily_dose_mcg=1e6) if d.name == "baclofen" else d
        for d in library.drugs
    )
    pump.firmware.cfg = dataclasses.replace(
        pump.firmware.cfg, drug_library=dataclasses.replace(library, drugs=drugs)
    )


def continuous(dose_mcg_per_day: float, max_daily_mcg: float = 2000.0) -> TherapyProgram:
    """A simple continuous program."""
    return TherapyProgram(Continuous(dose_mcg_per_day), max_daily_dose_mcg=max_daily_mcg)


class FakeHal:
    """A HAL with a hand-driven clock, for firmware tests without the emulator."""

    def __init__(self, start_rtc_s: float = START_EPOCH_S) -> None:
        self.nvm = InMemoryNvm()
        self.t_s = 0.0
        self._rtc_offset_s = start_rtc_s
        self.stroke_rate_per_h = 0.0
        self.stalled = False
        self.battery = 1.0
        self.tones: list[Tone] = []
        self.valve_resets = 0
        self.repeating: dict[Tone, float] = {}

    def monotonic_s(self) -> float:
        return self.t_s

    def rtc_s(self) -> float:
        return self._rtc_offset_s + self.t_s

    def set_rtc(self, epoch_s: float) -> None:
        self._rtc_offset_s = epoch_s - self.t_s

    def set_stroke_rate(self, strokes_per_h: float) -> None:
        self.stroke_rate_per_h = strokes_per_h

    def motor_stalled(self) -> bool:
        return self.stalled

    def battery_remaining_fraction(self) -> float:
        return self.battery

    def sound(self, tone: Tone) -> None:
        self.tones.append(tone)

    def reset_valve(self) -> None:
        self.valve_resets += 1

    def repeat_tone(self, tone: Tone, every_s: float) -> None:
        self.repeating[tone] = every_s
