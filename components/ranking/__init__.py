"""Rankers, one model per file, registered here by name."""
from components.ranking.base import Ranker, Samples
from components.ranking.coarse import CoarseConfig, CoarseRanker
from components.ranking.deepfm import DeepFMConfig, DeepFMRanker
from components.ranking.din import DINConfig, DINRanker
from components.ranking.mlp import MLPConfig, MLPRanker

RANKERS = {"mlp": MLPRanker, "coarse": CoarseRanker, "deepfm": DeepFMRanker, "din": DINRanker}

__all__ = ["CoarseConfig", "CoarseRanker", "DINConfig", "DINRanker", "DeepFMConfig", "DeepFMRanker", "MLPConfig",
           "MLPRanker", "RANKERS", "Ranker", "Samples"]
