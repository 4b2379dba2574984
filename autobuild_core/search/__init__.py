"""Search strategies over a search space or an AutoBuild-pruned space, with a budget of unique
evaluations (see :func:`run_search`). No Prefect or MLflow here: flows wrap these calls."""

from .autobuild import IterativeAutoBuild, IterativeSettings, PredictorGuided
from .domain import Dimension, Domain, PrunedDomain, SpaceDomain, SubsetDomain, as_domain
from .pareto import crowding_distance, hypervolume_2d, hypervolume_improvement_2d, non_dominated, to_minimization
from .runner import SearchResult, run_search
from .strategies import (
    OptunaNSGA2,
    OptunaTPE,
    OrderedSearch,
    RandomSearch,
    RegularizedEvolution,
    SearchStrategy,
    get_strategy,
    list_methods,
)

__all__ = [
    "Dimension", "Domain", "PrunedDomain", "SpaceDomain", "SubsetDomain", "as_domain",
    "crowding_distance", "hypervolume_2d", "hypervolume_improvement_2d", "non_dominated", "to_minimization",
    "SearchResult", "run_search",
    "SearchStrategy", "RandomSearch", "RegularizedEvolution", "OrderedSearch", "OptunaTPE", "OptunaNSGA2",
    "get_strategy", "list_methods",
    "IterativeAutoBuild", "PredictorGuided", "IterativeSettings",
]
