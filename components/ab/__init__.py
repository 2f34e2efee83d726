"""A/B testing: layered salted-hash assignment and the statistics of ratio metrics."""
from components.ab.analysis import AnalysisConfig, Breach, always_valid_lift, latency_breaches, look
from components.ab.cuped import CupedFit, UserData, cuped
from components.ab.sequential import AlwaysValid, always_valid, msprt_p
from components.ab.splitter import (BUCKETS, HOLDOUT, NO_EXPERIMENT, UNENROLLED, Allocation, Assigner,
                                    Assignment, SplitError, Splitter, buckets, check_layers)
from components.ab.stats import ArmSummary, Comparison, compare, ctr_summary, power, srm_pvalue

__all__ = ["BUCKETS", "HOLDOUT", "NO_EXPERIMENT", "UNENROLLED", "Allocation", "AlwaysValid", "AnalysisConfig",
           "ArmSummary", "Assigner", "Assignment", "Breach", "Comparison", "CupedFit", "SplitError", "Splitter",
           "UserData", "always_valid", "always_valid_lift", "buckets", "check_layers", "compare", "ctr_summary",
           "cuped", "latency_breaches", "look", "msprt_p", "power", "srm_pvalue"]
