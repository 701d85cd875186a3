"""Run a scenario headless: build the pump, play the timed actions, collect the history."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import math
import pickle
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import simpy

from itpump.emulator.device_profile import DeviceProfile, load_profile
from itpump.emulator.faults import Fault, FaultKind
from itpump.emulator.patient import LivePatient, pk_model_for
from itpump.emulator.pk import PKModel
from itpump.emulator.pump import CountingEnvironment, EmulatedPump, PumpSilentError
from itpump.emulator.scenario import (
    Action,
    AlarmThresholdAction,
    BolusAction,
    BridgeBolusAction,
    CatheterRevisionAction,
    ClearFaultAction,
    FaultAction,
    PatientBolusAction,
    PrimeAction,
    ProgramAction,
    RefillAction,
    RunUntilAction,
    Scenario,
    SetClockAction,
    SimpleAction,
)
from itpump.firmware_stubs.errors import Refusal
from itpump.protocol.therapy import Catheter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What happened when an action ran."""

    t_h: float
    index: int  # 1-based position in the file
    type: str
    accepted: bool
    code: str = "OK"
    detail: str = ""
    # After an accepted refill or program: the dates the pump then showed for its
    # low-reservoir alarm and for empty, as scenario hours (None: no projection).
    projected_low_reservoir_h: float | None = None
    projected_empty_h: float | None = None


@dataclass(slots=True)
class RunResult:
    """Everything a run produced."""

    scenario: Scenario
    profile: DeviceProfile
    seed: int
    env: CountingEnvironment
    pump: EmulatedPump
    pk_model: PKModel | None  # None: a drug without a PK model (no concentration output)
    outcomes: list[ActionOutcome] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def drugs_without_pk(self) -> list[tuple[str, float]]:
        """(drug, first fill time h) for each drug filled that has no PK model: the report's
        "no PK model for <drug> from <time>" (the run's concentrations are then NaN)."""
        first: dict[str, float] = {}
        for fill in self.pump.drug_fills:
            if not fill.has_pk:
                first.setdefault(fill.drug, fill.t_h)
        return list(first.items())

    @property
    def refusals(self) -> list[ActionOutcome]:
        """Actions the pump refused or could not hear."""
        return [o for o in self.outcomes if not o.accepted]


def expand_actions(scenario: Scenario) -> list[tuple[float, int, Action]]:
    """(time, 1-based index, action) for every occurrence before the end, in time order."""
    end = scenario.end_h
    timed: list[tuple[float, int, Action]] = []
    for i, action in enumerate(scenario.actions, start=1):
        if isinstance(action, RunUntilAction):
            continue
        if action.every is None:
            if action.at <= end:
                timed.append((action.at, i, action))
            continue
        last = min(end, action.until if action.until is not None else end)
        count = math.floor((last - action.at) / action.every + 1e-9) + 1
        timed.extend((action.at + k * action.every, i, action) for k in range(max(count, 0)))
    timed.sort(key=lambda item: (item[0], item[1]))
    return timed


def _play_actions(run_ref: weakref.ref[ScenarioRun]) -> simpy.events.ProcessGenerator:
    """The scenario player: performs each timed action at its time (see `ScenarioRun._play`)."""
    while True:
        run = run_ref()
        if run is None or run._detached or run._next_action >= len(run._timed):
            return  # replaced by a snapshot or a reset, or every action done
        delay_h = run._timed[run._next_action][0] - run.pump.now_h
        if delay_h > 0:
            timeout = run.env.timeout(delay_h)
            del run  # hold the run only weakly while waiting
            yield timeout
            continue
        run._perform_next()


def _perform(pump: EmulatedPump, action: Action) -> None:
    fw = pump.firmware
    if isinstance(action, RefillAction):
        pump.refill(
            action.volume_ml,
            action.drug,
            action.concentration_mcg_per_ml,
            bridge=action.bridge,
            aspirate_ml=action.aspirate_ml,
            entered_volume_ml=action.entered_volume_ml,
            entered_drug=action.entered_drug,
            entered_conc_mcg_per_ml=action.entered_concentration_mcg_per_ml,
            pocket_fraction=action.pocket_fill_fraction,
        )
    elif isinstance(action, PrimeAction):
        pump.call(fw.prime, action.volume_ml)
    elif isinstance(action, CatheterRevisionAction):
        pump.revise_catheter(
            action.length_cm, action.volume_ul_per_cm, tell_pump=action.tell_pump
        )
    elif isinstance(action, ProgramAction):
        # Keys the action leaves out (drug, patient, catheter) keep what the pump holds.
        pump.call(fw.commit_program, action.program(fw.active_program()))
    elif isinstance(action, BolusAction):
        pump.call(fw.clinician_bolus, action.dose_mcg, action.duration_min, action.then == "resume")
    elif isinstance(action, BridgeBolusAction):
        pump.call(fw.bridge_bolus, action.volume_ml, action.old_concentration_mcg_per_ml)
    elif isinstance(action, PatientBolusAction):
        pump.call(fw.patient_bolus)
    elif isinstance(action, FaultAction):
        pump.inject(Fault.make(action.kind, action.value))
    elif isinstance(action, ClearFaultAction):
        pump.clear(FaultKind(action.kind))
    elif isinstance(action, AlarmThresholdAction):
        pump.call(fw.set_low_reservoir_threshold, action.low_reservoir_ml)
    elif isinstance(action, SetClockAction):
        pump.call(fw.set_clock, action.time.timestamp())
    elif isinstance(action, SimpleAction):
        command = {
            "stop": fw.stop_therapy,
            "resume": fw.resume_therapy,
            "cancel_bolus": fw.cancel_bolus,
            "acknowledge_alarms": fw.acknowledge_alarm,
            "valve_reset": fw.reset_mri_valve,
            "alarm_test": fw.alarm_test,
            "interrogate": fw.status,
        }[action.type]
        pump.call(command)


def _projection_h(pump: EmulatedPump, now_h: float) -> tuple[float | None, float | None]:
    """What a clinician reads off the programmer after a refill or program: the pump's
    projected low-reservoir and empty dates, moved from its clock (which a reset or set_clock
    can shift) to scenario time by their distance from its clock now."""
    status = pump.firmware.status()
    return tuple(  # type: ignore[return-value]
        None if rtc_s is None else now_h + (rtc_s - status.rtc_s) / 3600.0
        for rtc_s in (status.projected_low_reservoir_rtc_s, status.projected_empty_rtc_s)
    )


class ScenarioRun:
    """A scenario set up and ready to run (or step) in simulated time."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int | None = None,
        profile: DeviceProfile | None = None,
        *,
        live_pk: bool = False,
        env: CountingEnvironment | None = None,
        serial: str | None = None,
        history_window_h: float | None = None,
    ) -> None:
        """Build the pump; `live_pk` also feeds the PK model as the run goes (for rig queries;
        outputs are computed from the recorded history either way). `history_window_h`
        bounds the recorded history to about that many hours (None: all of it)."""
        self.scenario = scenario
        self.seed = scenario.scenario.seed if seed is None else seed
        self.profile = profile or load_profile(scenario.scenario.profile)
        header = scenario.scenario
        start = header.start if header.start.tzinfo else header.start.replace(tzinfo=dt.UTC)
        self.start_epoch_s = start.timestamp()
        self.env = env if env is not None else CountingEnvironment()
        # The drug library says which PK model the drugs filled have (the label's baclofen
        # model, or none: then no concentration output, never baclofen's for another drug).
        self.pk_model: PKModel | None = pk_model_for(
            self.profile.firmware_config().drug_library,
            [a.drug for a in scenario.actions if isinstance(a, RefillAction)],
            scenario.patient.weight_kg,
            scenario.implant.catheter_tip_cm,
        )
        implant = scenario.implant
        serial = ScenarioRun.serial_for(scenario, self.seed, self.profile, serial)
        self.pump = EmulatedPump(
            self.env,
            self.profile,
            serial=serial,
            seed=self.seed,
            start_epoch_s=self.start_epoch_s,
            catheter_volume_ml=Catheter(
                implant.catheter_length_cm, implant.catheter_volume_ul_per_cm
            ).volume_ml,
            battery_initial_fraction=implant.battery_remaining_pct / 100.0,
            patient=LivePatient(self.pk_model) if live_pk and self.pk_model else None,
            history_window_h=history_window_h,
        )
        fw = self.pump.firmware
        # Implant programming: what the clinician enters before the first refill.
        self.pump.call(fw.set_patient_id, scenario.patient.id)
        self.pump.call(
            fw.set_catheter, implant.catheter_length_cm, implant.catheter_volume_ul_per_cm
        )
        self.result = RunResult(
            scenario, self.profile, self.seed, self.env, self.pump, self.pk_model
        )
        self._timed = expand_actions(scenario)
        self._next_action = 0  # index into _timed of the next action to perform
        self._detached = False
        self._player: simpy.Process | None = self.env.process(self._play())

    @property
    def now_h(self) -> float:
        """Scenario (pump-local) time in hours."""
        return self.pump.now_h

    def _play(self) -> simpy.events.ProcessGenerator:
        # The player holds its run only weakly while it waits: a run replaced by a snapshot
        # or a reset must be freed even while its next action's timeout stays queued in a
        # world whose time stands still (found by the fuzz target's memory bound).
        return _play_actions(weakref.ref(self))

    def _perform_next(self) -> None:
        """Perform the next timed action now and record its outcome."""
        _, index, action = self._timed[self._next_action]
        self._next_action += 1
        now = self.pump.now_h
        try:
            _perform(self.pump, action)
            low_h, empty_h = (
                _projection_h(self.pump, now)
                if isinstance(action, RefillAction | ProgramAction)
                or (isinstance(action, SimpleAction) and action.type == "interrogate")
                else (None, None)
            )
            outcome = ActionOutcome(now, index, action.type, True, "OK", "", low_h, empty_h)
        except Refusal as refusal:
            outcome = ActionOutcome(
                now, index, action.type, False, refusal.code.name, refusal.detail
            )
            log.info("t=%.3f h action #%d %s refused: %s", now, index, action.type, refusal)
        except PumpSilentError as silent:
            outcome = ActionOutcome(now, index, action.type, False, "NO_ANSWER", str(silent))
        self.result.outcomes.append(outcome)

    def detach(self) -> None:
        """Stop acting in the world (the run was replaced); its state stays readable."""
        self._detached = True
        self.pump.detach()

    def copy_detached(self) -> ScenarioRun:
        """A deep copy of the run (pump, history, pending actions) that belongs to no world;
        `attach` puts it into one, its own clock continuing where the copy was taken."""
        self.pump.truth()  # bring hardware and recorder to now before copying
        memo: dict[int, object] = {
            id(self.env): None,
            id(self._player): None,
            id(self.pump.on_alarm): None,
        }
        twin = copy.deepcopy(self, memo)
        twin._detached = True
        twin.pump._detached = True
        return twin

    def to_bytes(self) -> bytes:
        """The run's whole state now, as `copy_detached` would copy it, pickled: the format
        of snapshots and of `itpump serve --state` (`emulator/state.py`).

        Pickles the live run with its links to the world (environment, scenario player, alarm
        listener) left out for the duration, which costs a fraction of a deep copy.
        """
        pump = self.pump
        pump.truth()  # bring hardware and recorder to now before saving
        kept = self.env, self.result.env, self._player, pump.env, pump.on_alarm
        # None stands in for the world while pickling; put back in `finally`, so a failing
        # pickle never leaves the live run without its world.
        self.env = self.result.env = pump.env = None  # type: ignore[assignment]
        self._player = pump.on_alarm = None
        try:
            return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            self.env, self.result.env, self._player, pump.env, pump.on_alarm = kept

    @staticmethod
    def from_bytes(data: bytes) -> ScenarioRun:
        """A detached run from `to_bytes` output; `attach` puts it into a world.

        Unpickling runs code named by the data: only load bytes this program wrote (a
        snapshot, or a state file the user trusts).
        """
        run = pickle.loads(data)  # trusted input: see the docstring
        if not isinstance(run, ScenarioRun):
            raise TypeError(f"not a pump state: a pickled {type(run).__name__}")
        run._detached = True
        run.pump._detached = True
        return run

    @staticmethod
    def serial_for(
        scenario: Scenario, seed: int | None, profile: DeviceProfile | None, serial: str | None
    ) -> str:
        """The serial number `ScenarioRun(scenario, seed, profile, serial=serial)` gives its
        pump, without building it (to find a stored pump by serial)."""
        header = scenario.scenario
        given = serial or header.serial
        if given:
            return given
        seed = header.seed if seed is None else seed
        prefix = (profile or load_profile(header.profile)).serial_prefix
        return f"{prefix}-{seed % 1_000_000:06d}"

    def attach(self, env: CountingEnvironment) -> None:
        """Put a detached run into `env`: its pump and its remaining actions act there."""
        self.env = env
        self.result.env = env
        self._detached = False
        self.pump.attach(env)
        self._player = env.process(self._play())

    def run(self, progress: Callable[[float], None] | None = None) -> RunResult:
        """Run to the scenario end; `progress` gets the simulated hours done after each chunk."""
        end = self.scenario.end_h
        started = time.perf_counter()
        if progress is None:
            self.env.run(until=end)
        else:
            chunk = max(end / 100.0, 1.0)
            t = 0.0
            while t < end:
                t = min(t + chunk, end)
                self.env.run(until=t)
                progress(t)
        self.pump.truth()  # bring the hardware and the recorder up to the end time
        self.result.wall_s += time.perf_counter() - started
        return self.result


def run_scenario(
    scenario: Scenario, seed: int | None = None, progress: Callable[[float], None] | None = None
) -> RunResult:
    """Build and run a scenario to its end."""
    return ScenarioRun(scenario, seed).run(progress)
