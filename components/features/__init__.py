"""Features defined once: the same definitions build offline tables (DuckDB) and serve online."""
from components.features.definitions import FEATURES, FeatureDef, vectorize
from components.features.store import FeatureStore, build_features

__all__ = ["FEATURES", "FeatureDef", "FeatureStore", "build_features", "vectorize"]
