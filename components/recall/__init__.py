"""Recall channels, one per file, registered here by name."""
from components.recall.explore import ExploreConfig, ExploreRecaller
from components.recall.generative import GenerativeConfig, GenerativeRecaller
from components.recall.itemcf import ItemCFConfig, ItemCFRecaller
from components.recall.popular import PopularConfig, PopularRecaller

CHANNELS = {
    "popular": PopularRecaller,
    "itemcf": ItemCFRecaller,
    "explore": ExploreRecaller,
    "generative": GenerativeRecaller,
}

__all__ = ["CHANNELS", "ExploreConfig", "ExploreRecaller", "GenerativeConfig", "GenerativeRecaller", "ItemCFConfig", "ItemCFRecaller",
           "PopularConfig", "PopularRecaller"]
