"""Lineage of a day's models: which features (with their definitions' hashes) and which source
tables (with their partition days) each arm's recall channels and rankers were trained on."""
from __future__ import annotations

import pyarrow as pa

from components.contracts import SCHEMAS
from components.features.definitions import FEATURES, definitions_version
from components.lake import Lake


def day_ranges(days: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5': partition days, short enough for a tag or a table cell."""
    out: list[str] = []
    for d in sorted(days):
        if out and int(out[-1].split("-")[-1]) == d - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{d}"
        else:
            out.append(str(d))
    return ",".join(out)


def features() -> list[dict]:
    return [{"name": f.name, "entity": f.entity, "window": f.window, "dtype": f.dtype, "inputs": list(f.inputs),
             "sources": list(f.sources), "hash": f.definition_hash()} for f in FEATURES]


def ranker_sources(lake: Lake, sample_days: list[int]) -> dict[str, list[int]]:
    """The samples' days, and behind them the feature tables of those days, the impressions they
    count (every day before the last one, and its own for labels and real-time counts) and the
    catalog up to it."""
    last = max(sample_days, default=-1)
    upto = {t: [d for d in lake.days(t) if d <= last] for t in ("impressions", "organic", "items", "users")}
    return {"samples": list(sample_days), "features_user": list(sample_days),
            "features_item": list(sample_days), **upto}


def channel_sources(lake: Lake, day: int) -> dict[str, list[int]]:
    """Recall channels read the click log and the catalog up to the training day."""
    return {t: [d for d in lake.days(t) if d <= day] for t in ("impressions", "organic", "items")}


def of_day(lake: Lake, day: int, arms: dict[str, tuple[list[str], list[str]]], sample_days: list[int]) -> dict:
    """Lineage of the models trained on `day`; `arms`: arm -> (its channels, its rankers)."""
    rankers = sorted({r for _, rs in arms.values() for r in rs})
    channels = sorted({c for cs, _ in arms.values() for c in cs})
    rank_src, chan_src = ranker_sources(lake, sample_days), channel_sources(lake, day)
    models = {**{c: {"kind": "recall", "sources": chan_src} for c in channels},
              **{r: {"kind": "ranker", "sources": rank_src, "features": [f.name for f in FEATURES]} for r in rankers}}
    return {"day": day, "features_version": definitions_version(), "features": features(), "models": models,
            "arms": {arm: [*cs, *rs] for arm, (cs, rs) in arms.items()}}


def table(lineage: dict) -> pa.Table:
    """model_lineage rows: per arm and model, each feature and each source table."""
    hashes = {f["name"]: f["hash"] for f in lineage["features"]}
    rows = []
    for arm, models in lineage["arms"].items():
        for model in models:
            spec = lineage["models"][model]
            rows += [{"kind": "feature", "name": f, "detail": hashes[f]} | {"model": model, "arm": arm}
                     for f in spec.get("features", [])]
            rows += [{"kind": "source", "name": t, "detail": f"days {day_ranges(d)}" if d else "no partitions"}
                     | {"model": model, "arm": arm} for t, d in spec["sources"].items()]
    return pa.Table.from_pylist([{"day": lineage["day"], **r, "features_version": lineage["features_version"]}
                                 for r in rows], schema=SCHEMAS["model_lineage"])
