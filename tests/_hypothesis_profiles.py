"""Hypothesis settings of the fuzz suite (tests/test_fuzz.py).

Two profiles, chosen by the environment variable ``FASTXENT_HYPOTHESIS_PROFILE``:

``default`` (unset, or ``default``)
    A few hundred examples per public function, no deadline: the CI run (about a minute on
    2 cores).
``slow``
    20,000 examples per public function: the long search, run by hand or nightly; see
    docs/reliability.md.

``FASTXENT_FUZZ_EXAMPLES=N`` sets the count of either profile (e.g. small under valgrind).

They are registered under the names ``fuzz-default`` and ``fuzz-slow`` and applied to the fuzz
tests with a decorator (``@fuzz_settings()``) rather than loaded globally, so that they do not
change the profile tests/conftest.py loads for the other hypothesis tests.
"""
import os

from hypothesis import HealthCheck, settings

_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
               HealthCheck.large_base_example]

_EXAMPLES = os.environ.get("FASTXENT_FUZZ_EXAMPLES")  # overrides either profile's count

settings.register_profile(
    "fuzz-default", max_examples=int(_EXAMPLES or 300), deadline=None, print_blob=True,
    suppress_health_check=_SUPPRESSED,
)
settings.register_profile(
    "fuzz-slow", max_examples=int(_EXAMPLES or 20000), deadline=None, print_blob=True,
    suppress_health_check=_SUPPRESSED,
)

#: The profile in force: "default" or "slow".
PROFILE = os.environ.get("FASTXENT_HYPOTHESIS_PROFILE", "default").strip() or "default"
if PROFILE not in ("default", "slow"):
    raise ValueError(f"FASTXENT_HYPOTHESIS_PROFILE must be 'default' or 'slow'; got {PROFILE!r}")


def fuzz_settings(scale=1.0):
    """The settings of one fuzz test: the profile's, with ``scale`` times its example count
    (for tests whose examples are much cheaper or dearer than the others). The slow profile
    never scales a count down: its promise is at least its count for every function."""
    base = settings.get_profile(f"fuzz-{PROFILE}")
    if PROFILE == "slow":
        scale = max(scale, 1.0)
    return settings(base, max_examples=max(1, int(base.max_examples * scale)))
