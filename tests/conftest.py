"""Test-wide settings."""

from __future__ import annotations

import os

from hypothesis import settings

# In CI, property tests draw the same examples every run (reproducible pass/fail); locally they
# explore new examples each run. Select with HYPOTHESIS_PROFILE=ci|dev.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
