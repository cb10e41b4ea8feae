"""The search over parallel plans: rank.py evaluates and ranks them (`search`), execute.py runs
the simulations (this process, a process pool or Ray), diagnose.py explains why no plan fits.

Where to look: `apex_fast/planner.py` turns the `plan` command's options into a model, cluster,
workload and engine settings and calls `search`; `apex_fast/plans/` enumerates the plans and
sizes their memory; this package evaluates them.
"""

from apex_fast.search.diagnose import no_plan_message
from apex_fast.search.execute import SimJob, simulate_plans, usable_cores
from apex_fast.search.rank import (
    OBJECTIVES,
    Evaluated,
    MetricOptions,
    SearchResult,
    check_capacity_factor,
    objective_key,
    search,
)

__all__ = [
    "OBJECTIVES",
    "Evaluated",
    "MetricOptions",
    "SearchResult",
    "SimJob",
    "check_capacity_factor",
    "no_plan_message",
    "objective_key",
    "search",
    "simulate_plans",
    "usable_cores",
]
