"""Hypothesis profiles for the engine tests: derandomized in CI, small enough for 2 cores."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("engine-ci", max_examples=25, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("engine-dev", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("TANJI_HYPOTHESIS_PROFILE", "engine-ci"))
