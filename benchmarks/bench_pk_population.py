"""PK population benchmark: 10,000 virtual patients x 90 days, concentrations every 10 minutes.

Measures, in one process:
- wall time of `simulate_population` (exact solver, vectorised over patients, chunked over
  output times, percentiles 5/50/95 of the four concentrations at every output time): median
  of `--repeat` runs;
- peak memory of one such run: tracemalloc peak (Python and numpy allocations) in a separate,
  untimed run, and the process's maximum resident set size at the end;
- the same regimen for the first `--ivp-patients` of those patients, solved one patient at a
  time with scipy.integrate.solve_ivp (DOP853, rtol 1e-10, restarted at every rate change and
  bolus): its wall time, the speed ratio per patient against the vectorised run, and the
  largest relative difference from the exact solution (relative to the value, or to 1e-6 of
  that concentration's peak for values below that; see tests/test_pk_property.py).

Regimen (realistic maintenance start): 200 mcg/day simple continuous, titrated +15 % every
48 h for 12 days (the label allows 10-30 % once per 24 h); from day 14 a flex schedule,
06:00-22:00 at the titrated rate and 22:00-06:00 at +25 %, plus a 25 mcg patient bolus at
08:00 every day. Adult weights ~N(75, 15) kg clipped to 45-130 kg; default variability.

Run: python3 -m benchmarks.bench_pk_population [--patients 10000] [--days 90] [--repeat 3]
     [--ivp-patients 100]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from itpump.emulator.pk import InputSchedule, PKParameters
from itpump.emulator.pk.population import PopulationResult, simulate_population
from itpump.emulator.pk.system import OUTPUT_NAMES, build_system

SEED = 2026
OUTPUT_STEP_H = 1.0 / 6.0


@dataclass(frozen=True)
class Regimen:
    schedule: InputSchedule
    times_h: np.ndarray
    weights_kg: np.ndarray


def build_regimen(days: int, n_patients: int) -> Regimen:
    """The regimen of the module docstring over `days` days."""
    starts: list[float] = []
    rates: list[float] = []
    daily_mcg = 200.0
    for step in range(7):  # days 0, 2, ..., 12
        starts.append(48.0 * step)
        rates.append(daily_mcg / 24.0)
        daily_mcg *= 1.15
    bolus_times: list[float] = []
    for day in range(14, days):
        base = 24.0 * day
        starts += [base + 6.0, base + 22.0]
        rates += [daily_mcg / 24.0, 1.25 * daily_mcg / 24.0]
        bolus_times.append(base + 8.0)
    schedule = InputSchedule.from_segments(
        starts, rates, None, bolus_times, np.full(len(bolus_times), 25.0)
    )
    n_outputs = round(days * 24.0 / OUTPUT_STEP_H) + 1
    times = np.arange(n_outputs) * OUTPUT_STEP_H
    weights = np.clip(np.random.default_rng(SEED + 1).normal(75.0, 15.0, n_patients), 45.0, 130.0)
    return Regimen(schedule, times, weights)


def run_population(
    regimen: Regimen, n_patients: int, *, keep_individual: bool = False
) -> PopulationResult:
    """The vectorised, exact population simulation."""
    return simulate_population(
        PKParameters.baclofen(),
        regimen.schedule,
        regimen.times_h,
        n_patients=n_patients,
        seed=SEED,
        weights_kg=regimen.weights_kg[:n_patients],
        keep_individual=keep_individual,
    )


def solve_ivp_patients(regimen: Regimen, parameters: dict[str, np.ndarray]) -> np.ndarray:
    """Per-patient numerical integration: outputs (P, T, 4)."""
    system = build_system(parameters, has_csf_peripheral=False)
    schedule = regimen.schedule
    times = regimen.times_h
    breakpoints = schedule.breakpoints_h
    ends = np.append(breakpoints[1:], times[-1])
    out = np.empty((system.n_patients, times.size, len(OUTPUT_NAMES)))
    for patient in range(system.n_patients):  # the per-patient loop being compared against
        a, b, c = system.a[patient], system.b[patient], system.c[patient]
        x = np.zeros(a.shape[0])
        for k, start in enumerate(breakpoints):
            x = x + b @ schedule.boluses_mcg[k]
            end = float(ends[k])
            last = k == breakpoints.size - 1
            inside = np.flatnonzero((times >= start) & ((times <= end) if last else (times < end)))
            forcing = b @ schedule.rates_mcg_per_h[k]
            if end <= start:
                out[patient, inside] = (c @ x[:, None]).T
                continue
            solution = solve_ivp(
                lambda _t, y, a=a, f=forcing: a @ y + f,
                (float(start), end),
                x,
                method="DOP853",
                rtol=1e-10,
                atol=1e-12,
                t_eval=np.unique(np.append(times[inside], end)),
            )
            lookup = dict(zip(solution.t.tolist(), solution.y.T, strict=True))
            for i in inside:
                out[patient, i] = c @ lookup[float(times[i])]
            x = solution.y[:, -1]
    return out


def max_relative_difference(candidate: np.ndarray, exact: np.ndarray) -> float:
    """max |a - b| / max(|b|, 1e-6 * peak of that concentration), over patients and times."""
    peak = np.abs(exact).max(axis=(0, 1))
    scale = np.maximum(np.abs(exact), 1e-6 * peak)
    return float((np.abs(candidate - exact) / scale).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ivp-patients", type=int, default=100)
    args = parser.parse_args()

    regimen = build_regimen(args.days, args.patients)
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )
    print(
        f"regimen: {args.days} days, {regimen.schedule.breakpoints_h.size} breakpoints, "
        f"{regimen.times_h.size} output times (every 10 min); {args.patients} patients"
    )

    walls = []
    result: PopulationResult | None = None
    for _ in range(args.repeat):
        began = time.perf_counter()
        result = run_population(regimen, args.patients)
        walls.append(time.perf_counter() - began)
    assert result is not None
    wall = statistics.median(walls)
    print(f"population wall: median {wall:.2f} s of {[round(w, 2) for w in walls]}")
    expm_patients = int(result.uses_matrix_exponential.sum())
    print(f"patients on the matrix exponential path: {expm_patients}")
    final = {name: result.percentiles[name][:, -1].round(2).tolist() for name in OUTPUT_NAMES}
    print(f"percentiles 5/50/95 at the last time: {final}")

    tracemalloc.start()
    run_population(regimen, args.patients)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"tracemalloc peak: {peak / 1e6:.0f} MB")

    n_ivp = args.ivp_patients
    began = time.perf_counter()
    small = run_population(regimen, n_ivp, keep_individual=True)
    small_wall = time.perf_counter() - began
    assert small.individual is not None
    exact = np.stack([small.individual[name] for name in OUTPUT_NAMES], axis=-1)
    began = time.perf_counter()
    numerical = solve_ivp_patients(regimen, small.parameters)
    ivp_wall = time.perf_counter() - began
    per_patient_vectorised = wall / args.patients
    per_patient_ivp = ivp_wall / n_ivp
    print(f"solve_ivp loop, {n_ivp} patients: {ivp_wall:.1f} s ({per_patient_ivp:.3f} s/patient)")
    print(
        f"vectorised exact, {n_ivp} patients: {small_wall:.3f} s; "
        f"{args.patients} patients: {per_patient_vectorised * 1e3:.3f} ms/patient"
    )
    print(
        f"speed ratio per patient (solve_ivp / vectorised, at {args.patients}): "
        f"{per_patient_ivp / per_patient_vectorised:,.0f}x"
    )
    print(f"speed ratio at equal size ({n_ivp} patients): {ivp_wall / small_wall:,.0f}x")
    difference = max_relative_difference(numerical, exact)
    print(f"max relative difference solve_ivp vs exact: {difference:.2e}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process max RSS: {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
