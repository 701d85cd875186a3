"""Power-on reset: what the pump's firmware does when power comes back after a loss.

Public manufacturer advisories for programmable intrathecal pumps (2011-2013, see
docs/clinical.md and ../shared DOMAIN.md "power-on reset") describe the safe state a pump of
this kind comes back in after a reset (battery or electronics fault): the real-time clock and
the therapy program are lost, delivery continues at the minimum (keep-catheter-open) rate, and
a critical alarm sounds until a clinician reprograms the pump. The reprogramming workflow
the firmware enforces:

1. interrogate (the POWER_ON_RESET alarm, `clock_valid` false, therapy state MINIMUM_RATE);
2. set the clock (SET_CLOCK) — a program is refused while the clock is not set;
3. commit a program (the usual transfer); this ends the reset state and clears the alarm;
4. check the drug, reservoir volume and alarm threshold (kept in NVM), refill if unsure.

Until step 3 every bolus (clinician, patient, priming, bridge) is refused. Whether a power
loss resets the pump is a profile option (`power_on_reset`, default true): a pump whose
memory and clock survive a power loss resumes its program instead.
"""

from __future__ import annotations

#: The clock after a power-on reset: the earliest instant the pump's clock holds
#: (2000-01-01T00:00:00Z), reported until a clinician sets it.
RESET_CLOCK_EPOCH_S = 946_684_800.0

RESET_REFUSAL = (
    "power-on reset: the pump runs at the minimum rate until reprogrammed "
    "(set the clock, then commit a program)"
)
CLOCK_NOT_SET_REFUSAL = (
    "power-on reset lost the clock: set the clock (SET_CLOCK) before committing a program"
)
