"""Rankers, one model per file, registered here by name."""
from components.ranking.base import Ranker, Samples
from components.ranking.mlp import MLPConfig, MLPRanker

RANKERS = {"mlp": MLPRanker}

__all__ = ["MLPConfig", "MLPRanker", "RANKERS", "Ranker", "Samples"]
