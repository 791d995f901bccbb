"""gickexec: an executable, byte-accurate model of GICv3 LPI tables across kexec and kdump.

The library surface:

* :class:`World` - build a platform, boot kernel profiles, run MSI traffic, kexec, and read
  the results (:attr:`World.ledger`, :attr:`World.corruption`, :attr:`World.generations`)
  and the simulated memory (``world.machine.mem``).
* :func:`load_scenario` / :func:`parse_scenario` / :func:`run_scenario` - scenario files.
* :data:`PLATFORMS`, :data:`PROFILES` - the platform presets and kernel profiles.
"""

from gickexec.hw.platform import PLATFORMS, Platform
from gickexec.kernel.profiles import PROFILES, KernelProfile
from gickexec.scenario.runner import run_scenario
from gickexec.scenario.schema import Scenario, ScenarioError, load_scenario, parse_scenario
from gickexec.scenario.world import World

__all__ = [
    "PLATFORMS",
    "PROFILES",
    "KernelProfile",
    "Platform",
    "Scenario",
    "ScenarioError",
    "World",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
]
