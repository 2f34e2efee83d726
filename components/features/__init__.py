"""Features defined once: the same definitions build offline tables (DuckDB) and serve online.

Names are resolved lazily: components/contracts.py reads the column definitions to declare the
feature tables' schemas, and must not pull in the lake (which imports the contracts)."""
from importlib import import_module

_WHERE = {"FEATURES": "definitions", "FeatureDef": "definitions", "vectorize": "definitions",
          "FeatureStore": "store", "build_features": "store", "StreamProcessor": "stream"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'components.features' has no attribute {name!r}")
    return getattr(import_module(f"components.features.{_WHERE[name]}"), name)
