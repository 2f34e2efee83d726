"""Arrow schemas of every table that crosses a stage boundary; writers validate against them."""
from __future__ import annotations

import pyarrow as pa

# 2: per-request stage timings moved from `requests` to `request_latency`.
# 3: per-request recall time of each channel in `request_channel_latency`, its percentiles in
#    `channel_latency_daily`; features v2 (1/7-day windows, item age, real-time counts) with
#    `features_online`, `features_consistency` and `model_lineage`.
# 4: impressions.recall_ranks (each channel's rank of the item when served); samples' c_rank_*.
SCHEMA_VERSION = 4

# The serving pipeline's stages, in the order a request goes through them, declared once: the
# pipeline times them in this order, and request_latency, latency_daily and the dashboard follow it.
STAGES = ("recall", "merge", "coarse", "fine", "total")


def _latency_fields() -> list[pa.Field]:
    return [pa.field(f"{stage}_ms", pa.float32(), nullable=False) for stage in STAGES]


def _ab_analysis_fields() -> list[pa.Field]:
    """ab_daily beyond the day's own numbers: the absolute lift of the day (diff*), and the analysis
    of every day of the experiment so far, users as the unit: plain (cum_*) and with CUPED on the
    bootstrap day (cuped_*), each with the always-valid mSPRT at this look (*av_*) and its smallest p
    over all looks so far (*av_min_p_value). Null where they do not apply."""
    lift = ["lift", "lift_ci_low", "lift_ci_high", "diff", "diff_ci_low", "diff_ci_high", "p_value"]
    names = ["layer", "diff", "diff_ci_low", "diff_ci_high",
             "cum_users", "cum_impressions", "cum_clicks", "cum_ctr", "cum_ctr_ci_low", "cum_ctr_ci_high",
             *(f"cum_{x}" for x in lift), "cum_srm_p", "cum_av_p_value", "cum_av_lift_ci_low",
             "cum_av_lift_ci_high", "cum_av_min_p_value", "cuped_ctr", "cuped_ctr_ci_low", "cuped_ctr_ci_high",
             *(f"cuped_{x}" for x in lift), "cuped_variance_reduction", "cuped_av_p_value",
             "cuped_av_lift_ci_low", "cuped_av_lift_ci_high", "cuped_av_min_p_value"]
    types = {"layer": pa.string(), "cum_users": pa.int64(), "cum_impressions": pa.int64(),
             "cum_clicks": pa.int64()}
    return [pa.field(n, types.get(n, pa.float64())) for n in names]


def _feature_fields(table: str) -> list[pa.Field]:
    """The stored feature columns of `table`, as components/features/columns.py defines them."""
    from components.features.columns import columns_of

    types = {"int64": pa.int64(), "int32": pa.int32(), "list<int64>": pa.list_(pa.int64())}
    return [pa.field(c.name, types[c.dtype], nullable=False) for c in columns_of(table)]


SCHEMAS: dict[str, pa.Schema] = {
    "items": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("category", pa.int32(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("created_day", pa.int32(), nullable=False),
        pa.field("content", pa.list_(pa.float32()), nullable=False),
    ]),
    "users": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("age_bucket", pa.int32(), nullable=False),
        pa.field("region", pa.int32(), nullable=False),
        pa.field("created_day", pa.int32(), nullable=False),
    ]),
    "requests": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("request_id", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("experiment", pa.string(), nullable=False),
        pa.field("layer", pa.string(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
    ]),
    # Measured wall-clock time, the one thing a re-run cannot repeat, kept apart so that every
    # other table of a re-run day is byte-identical.
    "request_latency": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("request_id", pa.int64(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("batch_size", pa.int32(), nullable=False),
        *_latency_fields(),
    ]),
    # One row per request and recall channel of its arm (long, not a column per channel: arms
    # have different channels, and a new channel needs no schema change). Like the stages, each
    # request is charged its micro-batch's time; with parallel recall the channels overlap, so
    # the recall stage lasts about the slowest one, not their sum.
    "request_channel_latency": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("request_id", pa.int64(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("ms", pa.float32(), nullable=False),
    ]),
    # One row per intra-day update of an incremental arm's models (components/serving/incremental.py),
    # measured wall clock; written only on days an arm updates within the day. Its percentiles are
    # latency_daily's stage "update" (where `requests` counts updates).
    "update_latency": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("micro_batch", pa.int64(), nullable=False),
        pa.field("impressions", pa.int64(), nullable=False),
        pa.field("clicks", pa.int64(), nullable=False),
        pa.field("ranker_ms", pa.float64(), nullable=False),
        pa.field("channels_ms", pa.float64(), nullable=False),
        pa.field("total_ms", pa.float64(), nullable=False),
    ]),
    # The online store's local cache tier and server, one row per day served with kind redis (no
    # partition when embedded: there is no cache to count). Measured: the latencies are wall clock,
    # and a TTL cut by the clock may move a lookup between hit and miss. hits + misses = lookups,
    # the users asked for (one per request); round_trips: server reads of a batch's misses.
    "online_store_daily": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("shards", pa.int32(), nullable=False),
        pa.field("lookups", pa.int64(), nullable=False),
        pa.field("hits", pa.int64(), nullable=False),
        pa.field("misses", pa.int64(), nullable=False),
        pa.field("hit_rate", pa.float64()),
        pa.field("round_trips", pa.int64(), nullable=False),
        pa.field("server_p50_ms", pa.float64()),      # null: no round trip that day
        pa.field("server_p99_ms", pa.float64()),
        pa.field("server_mean_ms", pa.float64()),
        pa.field("cache_size", pa.int64(), nullable=False),
        pa.field("cache_ttl_s", pa.float64(), nullable=False),
    ]),
    "impressions": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("request_id", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("channels", pa.list_(pa.string()), nullable=False),
        # The item's rank in each of `channels`' own lists (0 the top), in the same order.
        pa.field("recall_ranks", pa.list_(pa.int32()), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("clicked", pa.bool_(), nullable=False),
    ]),
    # Items users took on their own (search, browsing) during a visit: no slate, no position.
    "organic": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("request_id", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
    ]),
    "features_user": pa.schema([
        pa.field("day", pa.int32(), nullable=False),      # partition: valid for serving this day
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("as_of", pa.int64(), nullable=False),    # ts up to which events were counted
        *_feature_fields("features_user"),
    ]),
    "features_item": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("as_of", pa.int64(), nullable=False),
        *_feature_fields("features_item"),
    ]),
    "samples": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("request_id", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("label", pa.int8(), nullable=False),
        pa.field("u_as_of", pa.int64(), nullable=False),
        *_feature_fields("features_user"),
        pa.field("i_as_of", pa.int64(), nullable=False),
        *_feature_fields("features_item"),
        *_feature_fields("stream"),
        *_feature_fields("stream_item"),
        *_feature_fields("candidate"),
    ]),
    # The feature vector served online for a sample of requests (one row per shown item), and
    # how many of them the samples reproduce: offline/online consistency.
    "features_online": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("request_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("features", pa.list_(pa.float32()), nullable=False),   # in the order of FEATURES
        pa.field("features_version", pa.string(), nullable=False),
    ]),
    "features_consistency": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("compared", pa.int64(), nullable=False),     # logged rows found in the samples
        pa.field("matched", pa.int64(), nullable=False),      # rows whose every feature agrees
        pa.field("match_rate", pa.float64()),                 # null when nothing was compared
        pa.field("logged", pa.int64(), nullable=False),       # logged rows, found or not
        pa.field("worst_feature", pa.string(), nullable=False),  # most often disagreeing ('' if none)
        pa.field("max_abs_diff", pa.float64(), nullable=False),
    ]),
    # What each arm's models of a training day were built from: features with their definitions'
    # hashes, and source tables with their partition days.
    "model_lineage": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),        # feature or source
        pa.field("name", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),      # definition hash, or partition days
        pa.field("features_version", pa.string(), nullable=False),
    ]),
    "ab_daily": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("experiment", pa.string(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("is_control", pa.bool_(), nullable=False),
        pa.field("share", pa.float64(), nullable=False),
        pa.field("users", pa.int64(), nullable=False),
        pa.field("requests", pa.int64(), nullable=False),
        pa.field("impressions", pa.int64(), nullable=False),
        pa.field("clicks", pa.int64(), nullable=False),
        pa.field("ctr", pa.float64(), nullable=False),
        pa.field("ctr_ci_low", pa.float64(), nullable=False),
        pa.field("ctr_ci_high", pa.float64(), nullable=False),
        pa.field("lift", pa.float64()),            # relative to control; null for the control
        pa.field("lift_ci_low", pa.float64()),
        pa.field("lift_ci_high", pa.float64()),
        pa.field("p_value", pa.float64()),
        pa.field("srm_p", pa.float64(), nullable=False),
        *_ab_analysis_fields(),
    ]),
    "latency_daily": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("requests", pa.int64(), nullable=False),
        pa.field("p50", pa.float64(), nullable=False),
        pa.field("p95", pa.float64(), nullable=False),
        pa.field("p99", pa.float64(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
    ]),
    "channel_latency_daily": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("requests", pa.int64(), nullable=False),
        pa.field("p50", pa.float64(), nullable=False),
        pa.field("p95", pa.float64(), nullable=False),
        pa.field("p99", pa.float64(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
    ]),
    "exposure_daily": pa.schema([  # components/exposure.py
        pa.field("day", pa.int32(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("impressions", pa.int64(), nullable=False),
        pa.field("items_shown", pa.int64(), nullable=False),
        pa.field("items_clicked", pa.int64(), nullable=False),
        pa.field("catalogue", pa.int64(), nullable=False),
        pa.field("gini", pa.float64(), nullable=False),
        pa.field("top1pct_share", pa.float64(), nullable=False),
        pa.field("personalised_share", pa.float64(), nullable=False),
    ]),
    "world_daily": pa.schema([
        pa.field("day", pa.int32(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("requests", pa.int64(), nullable=False),
        pa.field("ctr_expected", pa.float64(), nullable=False),  # of the slates actually served
        pa.field("ctr_oracle", pa.float64(), nullable=False),
        pa.field("ctr_random", pa.float64(), nullable=False),
    ]),
}


class ContractError(ValueError):
    """A table does not match its contract."""


def conform(name: str, table: pa.Table) -> pa.Table:
    """Return `table` cast to the schema of `name`, or raise ContractError saying what differs."""
    if name not in SCHEMAS:
        raise ContractError(f"unknown table '{name}'; known tables are {sorted(SCHEMAS)}")
    schema = SCHEMAS[name]
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [c for c in table.column_names if c not in schema.names]
    if missing or extra:
        raise ContractError(f"table '{name}': missing columns {missing}, unexpected columns {extra}")
    table = table.select(schema.names)
    for f in schema:
        if not f.nullable and table.column(f.name).null_count:
            raise ContractError(f"table '{name}': column '{f.name}' has nulls but is required")
    try:
        table = table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError) as exc:
        raise ContractError(f"table '{name}' does not fit its schema: {exc}") from None
    return table
