"""The lab's scenarios: the default suite and the building blocks to write more."""

from mptcpkit.lab.scenarios.base import Action, Flow, Measurement, RepOutcome, Rule, Scenario, with_engine
from mptcpkit.lab.scenarios.suite import default_suite, scenario_names

__all__ = [
    "Action",
    "Flow",
    "Measurement",
    "RepOutcome",
    "Rule",
    "Scenario",
    "default_suite",
    "scenario_names",
    "with_engine",
]
