"""Will a model run or train here? Memory and compute estimates, devices, and the environment doctor.

from llmkit.plan import PlanRequest, make_plan
plan = make_plan("llama-3.2-1b", PlanRequest(task="full", dtype="fp32", batch_size=32), "T4")
plan.estimate.total, plan.verdict.status
"""

from llmkit.plan.memory import MemoryEstimate, PlanRequest, estimate_memory
from llmkit.plan.planner import Plan, make_plan
from llmkit.plan.resolve import resolve_model
from llmkit.plan.spec import ModelSpec

__all__ = [
    "MemoryEstimate",
    "ModelSpec",
    "Plan",
    "PlanRequest",
    "estimate_memory",
    "make_plan",
    "resolve_model",
]
