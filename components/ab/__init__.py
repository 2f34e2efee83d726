"""A/B testing: salted-hash assignment and the statistics of ratio metrics."""
from components.ab.splitter import BUCKETS, Splitter, SplitError
from components.ab.stats import ArmSummary, Comparison, compare, ctr_summary, srm_pvalue

__all__ = ["BUCKETS", "ArmSummary", "Comparison", "SplitError", "Splitter", "compare", "ctr_summary",
           "srm_pvalue"]
