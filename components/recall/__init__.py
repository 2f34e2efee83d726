"""Recall channels, one per file, registered here by name."""
from components.features.columns import RECALL_CHANNELS
from components.recall.content_i2i import ContentI2IConfig, ContentI2IRecaller
from components.recall.coldstart import ColdStartConfig, ColdStartRecaller
from components.recall.explore import ExploreConfig, ExploreRecaller
from components.recall.generative import GenerativeConfig, GenerativeRecaller
from components.recall.itemcf import ItemCFConfig, ItemCFRecaller
from components.recall.popular import PopularConfig, PopularRecaller
from components.recall.popular_category import PopularCategoryConfig, PopularCategoryRecaller
from components.recall.sasrec import SASRecConfig, SASRecRecaller
from components.recall.swing import SwingConfig, SwingRecaller
from components.recall.two_tower import TwoTowerConfig, TwoTowerRecaller

CHANNELS = {
    "popular": PopularRecaller,
    "popular_category": PopularCategoryRecaller,
    "itemcf": ItemCFRecaller,
    "content_i2i": ContentI2IRecaller,
    "swing": SwingRecaller,
    "two_tower": TwoTowerRecaller,
    "sasrec": SASRecRecaller,
    "coldstart": ColdStartRecaller,
    "explore": ExploreRecaller,
    "generative": GenerativeRecaller,
}
if tuple(CHANNELS) != RECALL_CHANNELS:
    # The ranker's recall-rank features (features/columns.py) name every channel, in this order.
    raise ImportError(f"features/columns.py RECALL_CHANNELS {RECALL_CHANNELS} must list the channels {tuple(CHANNELS)}")

__all__ = ["CHANNELS", "ColdStartConfig", "ColdStartRecaller", "ContentI2IConfig", "ContentI2IRecaller", "ExploreConfig", "ExploreRecaller",
           "GenerativeConfig", "GenerativeRecaller", "ItemCFConfig", "ItemCFRecaller",
           "PopularCategoryConfig", "PopularCategoryRecaller", "PopularConfig", "PopularRecaller",
           "SASRecConfig", "SASRecRecaller", "SwingConfig", "SwingRecaller", "TwoTowerConfig",
           "TwoTowerRecaller"]
