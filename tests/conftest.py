"""Test-wide settings.

Hypothesis runs derandomized by default so that CI and every developer see the same
examples (a failure reproduces from a clean checkout).  To search new examples, run
``HYPOTHESIS_PROFILE=explore python -m pytest``.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
