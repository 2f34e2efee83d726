"""Daily training: every recall channel and ranker an experiment needs, fitted on the lake."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from components.features import lineage as features_lineage
from components.features.columns import ORGANIC_POSITION, TAKE_ORDER
from components.features.store import load_catalog
from components.lake import Lake
from components.ranking import RANKERS, Samples
from components.ranking.metrics import auc, calibration, gauc, logloss
from components.recall import CHANNELS
from components.experiment import ExperimentConfig
from components.types import TrainData

HOLDOUT_SHARE = 0.1


def train_data(lake: Lake, day: int) -> TrainData:
    """Clicks of every day up to and including `day`; channels apply their own windows."""
    con = lake.connect()
    # Items users took on their own are interactions too: a visit's organic take comes after its slate.
    organic = (f" UNION ALL SELECT user_id, item_id, day, ts, request_id, {ORGANIC_POSITION} AS position FROM organic "
               f"WHERE day <= {day}") if lake.days("organic") else ""
    clicks = con.sql(
        f"SELECT user_id, item_id, day, ts FROM (SELECT user_id, item_id, day, ts, request_id, position "
        f"FROM impressions WHERE clicked AND day <= {day}{organic}) ORDER BY {TAKE_ORDER}"
    ).fetchnumpy()
    con.close()
    return TrainData(day=day, catalog=load_catalog(lake, day), click_user=clicks["user_id"],
                     click_item=clicks["item_id"], click_day=clicks["day"].astype(np.int32),
                     click_ts=clicks["ts"])


def train_channels(lake: Lake, day: int, exp: ExperimentConfig, out: Path,
                   previous: Path | None = None) -> dict[str, float]:
    """Fit and save each recall channel any arm uses; returns what MLflow should record.
    `previous`: the models of the day before, which channels that warm-start begin from."""
    data = train_data(lake, day)
    metrics = {"clicks": float(len(data.click_item)), "items": float(data.catalog.n_items)}
    for name in exp.channels_needed():
        model = CHANNELS[name](getattr(exp.models, name))
        if previous is not None and hasattr(model, "warm_from"):
            model.warm_from(previous / name)
        model = model.fit(data)
        model.save(out / name)
        # Channels that report on their fit (e.g. semantic-id quality) have it recorded per day.
        metrics |= {f"{name}.{k}": float(v) for k, v in getattr(model, "metrics_", {}).items()}
    return metrics


def train_bootstrap(lake: Lake, exp: ExperimentConfig, out: Path) -> None:
    """Fit and save the logging policy's channels on the day-0 catalogue and no clicks: they serve day 0."""
    empty = np.zeros(0, np.int64)
    data = TrainData(day=-1, catalog=load_catalog(lake, 0), click_user=empty, click_item=empty,
                     click_day=empty.astype(np.int32), click_ts=empty)
    for name in exp.logging_policy.channels:
        CHANNELS[name](getattr(exp.models, name)).fit(data).save(out / name)


def _holdout(request_id: np.ndarray) -> np.ndarray:
    """A stable 10 % of requests, all rows of a request on the same side."""
    ids, inv = np.unique(request_id, return_inverse=True)                       # one hash per request
    h = np.fromiter((zlib.crc32(int(r).to_bytes(8, "little")) for r in ids), np.uint32, len(ids))
    return ((h % 1000) < HOLDOUT_SHARE * 1000)[inv.reshape(-1)]


def _split_samples(lake: Lake, days: list[int], catalog, history: bool) -> tuple[Samples, Samples]:
    """The samples of `days` in order, split into training and holdout rows as they are read: the
    partitions are never held whole, only the arrays the rankers read."""
    train, held = [], []
    for table in lake.read_batches("samples", days):
        part = Samples.from_table(table, catalog, history)
        test = _holdout(part.request_id)
        train.append(part.subset(~test))
        held.append(part.subset(test))
    if not train:
        empty = Samples.from_table(lake.read("samples", []), catalog, history)
        return empty, empty
    return Samples.concat(train, catalog), Samples.concat(held, catalog)


def sample_days(lake: Lake, day: int, exp: ExperimentConfig) -> list[int]:
    """The days of samples the rankers trained on `day` learn from."""
    return [d for d in lake.days("samples") if day - exp.models.sample_window_days < d <= day]


def lineage(lake: Lake, day: int, exp: ExperimentConfig) -> dict:
    """What the models trained on `day` were built from, per arm (components/features/lineage.py)."""
    arms = {name: (sorted(a.channels), [r for r in (a.coarse, a.fine_ranker) if r != "none"])
            for name, a in exp.arms.items()}
    return features_lineage.of_day(lake, day, arms, sample_days(lake, day, exp) if exp.rankers_needed() else [])


def train_rankers(lake: Lake, day: int, exp: ExperimentConfig, out: Path) -> dict[str, float]:
    """Fit each ranker on the samples of the last `sample_window_days` days; report holdout AUC."""
    names = exp.rankers_needed()
    if not names:
        return {}
    days = sample_days(lake, day, exp)
    catalog = load_catalog(lake, day)
    train, held = _split_samples(lake, days, catalog, any(RANKERS[n].uses_ids for n in names))
    metrics: dict[str, float] = {"samples": float(len(train.label) + len(held.label)), "sample_days": float(len(days))}
    for name in names:
        model = RANKERS[name](getattr(exp.models, name)).fit(train)
        # As served: position 0. Calibration is therefore against clicks at logged positions,
        # so below 1 is expected where lower slots are looked at less.
        prob = model.predict_samples(held)
        metrics |= {f"{name}.holdout_auc": auc(held.label, prob),
                    f"{name}.holdout_gauc": gauc(held.user_id, held.label, prob),
                    f"{name}.holdout_logloss": logloss(held.label, prob),
                    f"{name}.holdout_calibration": calibration(held.label, prob),
                    f"{name}.train_loss": model.losses_[-1]}
        model.save(out / name)
    return metrics
