"""Cost: what the LLM stages will send and cost before they send it, and the cost cap."""

from autointerp.cost.budget import BudgetExceeded, check_budget, format_estimate, save_estimate
from autointerp.cost.estimate import Estimate, StageEstimate, estimate

__all__ = [
    "BudgetExceeded",
    "Estimate",
    "StageEstimate",
    "check_budget",
    "estimate",
    "format_estimate",
    "save_estimate",
]
