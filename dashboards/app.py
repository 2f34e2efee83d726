"""reclab dashboard: compare the arms of an A/B experiment, with statistics that can be trusted.

Reads the lake (never writes). Run with `reclab dashboard --data-dir data`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from components.contracts import STAGES
from common.typedconf import ConfigError, from_mapping
from components.ab import AnalysisConfig, latency_breaches
from components.lake import Lake, LakeError

STAGE_ORDER = list(STAGES)
METHODS = {"always_valid": "always-valid (mSPRT)", "fixed_horizon": "fixed horizon (z-test)"}


def data_dir() -> Path:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=os.environ.get("RECLAB_DATA_DIR", "data"))
    args, _ = parser.parse_known_args(sys.argv[1:])
    return Path(args.data_dir)


@st.cache_data(ttl=10)
def load(root: str) -> dict[str, pd.DataFrame]:
    lake = Lake(Path(root) / "lake")
    with lake.connect() as con:
        tables = {}
        for name in ("ab_daily", "latency_daily", "world_daily", "model_lineage", "features_consistency",
                     "channel_latency_daily", "exposure_daily", "online_store_daily"):
            tables[name] = con.sql(f"SELECT * FROM {name} ORDER BY day").df() if lake.days(name) else pd.DataFrame()
    return tables


def manifest(root: Path) -> dict:
    path = root / "campaign.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def analysis_config(m: dict) -> AnalysisConfig:
    """The experiment's analysis settings from the campaign manifest; defaults for older campaigns."""
    try:
        return from_mapping(AnalysisConfig, m.get("experiment", {}).get("analysis", {}), "experiment.analysis")
    except ConfigError:
        return AnalysisConfig()


def value(row: pd.Series, name: str) -> float:
    """A statistic of the row, NaN when the column is absent (older lakes) or null."""
    v = row.get(name)
    return float("nan") if v is None or pd.isna(v) else float(v)


def columns(method: str, cuped: bool) -> dict[str, str]:
    """Which ab_daily columns hold the lift, its interval and the p-value for a method."""
    est = "cuped_" if cuped else "cum_"
    seq = f"{est}av_" if method == "always_valid" else est
    return {"ctr": f"{est}ctr", "lift": f"{est}lift", "p": f"{seq}p_value", "min_p": f"{seq}min_p_value",
            "lo": f"{seq}lift_ci_low", "hi": f"{seq}lift_ci_high",
            "ctr_lo": f"{est}ctr_ci_low", "ctr_hi": f"{est}ctr_ci_high"}


def verdict(row: pd.Series, cols: dict[str, str], cfg: AnalysisConfig, srm: float, breaches: list) -> tuple[str, str]:
    """One line for a treatment arm, and its severity: success, error, warning or info."""
    arm, lift, p = row["arm"], value(row, cols["lift"]), value(row, cols["p"])
    lo, hi = value(row, cols["lo"]), value(row, cols["hi"])
    ci = f"95 % CI {lo:+.1%} to {hi:+.1%}" if math.isfinite(lo) else "no interval yet"
    guard = f"; but it breaks a latency guardrail ({breaches[0]})" if breaches else ""
    earlier = value(row, cols["min_p"])
    if math.isfinite(earlier) and earlier < cfg.alpha <= p:
        guard += f"; an earlier look did differ (p = {earlier:.3g}): the effect changed over the days"
    if srm < cfg.srm_alpha:
        return f"{arm}: do not trust this result: sample ratio mismatch (p = {srm:.2g}).", "error"
    if not math.isfinite(p):
        return f"{arm}: not enough data to compare with control yet.", "info"
    if p < cfg.alpha and lift > 0:
        return f"{arm} beats control: CTR {lift:+.1%} ({ci}), p = {p:.3g}{guard}.", "warning" if breaches else "success"
    if p < cfg.alpha:
        return f"{arm} is worse than control: CTR {lift:+.1%} ({ci}), p = {p:.3g}{guard}.", "error"
    return (f"{arm}: no detectable difference yet: CTR {lift:+.1%} ({ci}), p = {p:.3g}{guard}.",
            "warning" if breaches else "info")


def day_axis(days: pd.Series) -> alt.X:
    return alt.X("x:Q", title="day", scale=alt.Scale(domain=[days.min() - 0.5, days.max() + 0.5]),
                 axis=alt.Axis(values=sorted(days.unique().tolist()), format="d"))


def ctr_chart(ab: pd.DataFrame, world: pd.DataFrame, cols: dict[str, str], cumulative: bool) -> alt.LayerChart:
    y, lo, hi = (cols["ctr"], cols["ctr_lo"], cols["ctr_hi"]) if cumulative else ("ctr", "ctr_ci_low", "ctr_ci_high")
    arms = sorted(ab["arm"].unique())
    # Arms side by side within a day, so their intervals do not hide each other.
    offset = {a: (i - (len(arms) - 1) / 2) * 0.12 for i, a in enumerate(arms)}
    data = ab.assign(ctr_shown=ab[y], low=ab[lo], high=ab[hi], x=ab["day"] + ab["arm"].map(offset))
    x = day_axis(ab["day"])
    base = alt.Chart(data).encode(x=x, color=alt.Color("arm:N"))
    band = base.mark_rule(strokeWidth=2).encode(y=alt.Y("low:Q", title="CTR"), y2="high:Q")
    line = base.mark_point(filled=True, size=40).encode(
        y="ctr_shown:Q", tooltip=["day", "arm", alt.Tooltip("ctr_shown:Q", title="CTR", format=".4f"),
                                  alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f")])
    ref = (world.groupby("day", as_index=False)[["ctr_oracle", "ctr_random"]].mean()
           .melt("day", var_name="reference", value_name="ctr"))
    ref["reference"] = ref["reference"].map({"ctr_oracle": "oracle", "ctr_random": "random"})
    ref["x"] = ref["day"]
    refs = alt.Chart(ref).mark_line(strokeDash=[6, 4], color="grey", point=alt.OverlayMarkDef(color="grey")).encode(
        x=x, y="ctr:Q", detail="reference:N", tooltip=["day", "reference", alt.Tooltip("ctr:Q", format=".4f")])
    labels = alt.Chart(ref[ref["day"] == ref["day"].max()]).mark_text(align="left", dx=8, color="grey").encode(
        x=x, y="ctr:Q", text="reference:N")
    return (refs + labels + band + line).properties(height=300)


def lift_chart(treat: pd.DataFrame, cols: dict[str, str]) -> alt.LayerChart:
    data = treat.assign(lift=treat[cols["lift"]], low=treat[cols["lo"]], high=treat[cols["hi"]], x=treat["day"])
    values = pd.concat([data["low"], data["high"], data["lift"], pd.Series([0.0])]).dropna()
    y = alt.Y("low:Q", title="lift over control", axis=alt.Axis(format="%"),
              scale=alt.Scale(domain=[float(values.min()), float(values.max())], nice=True))
    base = alt.Chart(data).encode(x=day_axis(data["day"]), color=alt.Color("arm:N"))
    band = base.mark_area(opacity=0.2).encode(y=y, y2="high:Q")
    line = base.mark_line(point=True).encode(y="lift:Q", tooltip=[
        "day", "arm", alt.Tooltip("lift:Q", format="+.2%"), alt.Tooltip("low:Q", format="+.2%"),
        alt.Tooltip("high:Q", format="+.2%"), alt.Tooltip(f"{cols['p']}:Q", title="p", format=".3g")])
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="grey").encode(y="y:Q")
    return (zero + band + line).properties(height=260)


def latency_section(lat: pd.DataFrame, control: str, cfg: AnalysisConfig, last_day: int) -> None:
    stage_rows = lat.melt(["day", "arm", "stage"], ["p50", "p99"], var_name="percentile", value_name="ms")
    chart = alt.Chart(stage_rows).mark_line(point=True).encode(
        x="day:O", y=alt.Y("ms:Q", title="ms"), color="arm:N", strokeDash="percentile:N",
        tooltip=["day", "arm", "stage", "percentile", alt.Tooltip("ms:Q", format=".2f")],
    ).properties(height=180, width=230).facet(column=alt.Column("stage:N", sort=STAGE_ORDER))
    st.altair_chart(chart)
    today = lat[lat["day"] == last_day]
    breaches = latency_breaches(today.to_dict("records"), control, cfg)
    if breaches:
        st.error("Latency guardrail broken on day {}: {}".format(last_day, "; ".join(map(str, breaches))))
    else:
        st.caption(f"Latency guardrail on day {last_day}: no treatment stage's p99 is more than "
                   f"{cfg.p99_max_increase:.0%} and {cfg.p99_min_ms:g} ms above control's.")
    pivot = today.pivot_table(index="stage", columns="arm", values="p99").reindex(STAGE_ORDER)
    # A static table: the daily table stays the page's one dataframe.
    st.table(pivot.rename(columns=lambda a: f"{a} p99 ms").round(2))


def channel_latency_table(chan: pd.DataFrame, last_day: int) -> None:
    """Each recall channel's own time per arm on the last day: which channel sets the recall stage."""
    today = chan[chan["day"] == last_day]
    pivot = today.pivot_table(index="channel", columns="arm", values=["p50", "p99"])
    pivot.columns = [f"{arm} {pct} ms" for pct, arm in pivot.columns]
    st.caption(f"Recall time of each channel on day {last_day} (ms; with parallel recall the recall stage "
               "lasts about as long as the slowest channel, otherwise their sum).")
    st.table(pivot[sorted(pivot.columns)].round(2))


def main() -> None:
    st.set_page_config(page_title="reclab: compare arms", layout="wide")
    root = data_dir()
    m = manifest(root)
    cfg = analysis_config(m)
    st.title("reclab: compare A/B arms")
    st.caption(f"campaign **{m.get('name', root)}** · data in `{root.resolve()}`")
    try:
        tables = load(str(root))
    except LakeError as exc:
        st.error(str(exc))
        return
    ab, lat, world = tables["ab_daily"], tables["latency_daily"], tables["world_daily"]
    if ab.empty:
        st.info("No reports yet. Run a campaign first: `make demo` or `reclab campaign`.")
        return

    experiments = [e for e in ab["experiment"].unique() if e != "bootstrap"] or list(ab["experiment"].unique())
    left, mid, right = st.columns([2, 2, 2])
    experiment = left.selectbox("experiment", experiments)
    method = mid.radio("statistics", list(METHODS), index=list(METHODS).index(cfg.method),
                       format_func=METHODS.get, horizontal=True)
    rows = ab[ab["experiment"] == experiment]
    has_cuped = "cuped_ctr" in rows and rows["cuped_ctr"].notna().any()
    cuped = right.toggle("CUPED (bootstrap day as covariate)", value=cfg.cuped and has_cuped, disabled=not has_cuped)
    cols = columns(method, cuped)
    days = sorted(rows["day"].unique())
    last_day = max(days)
    last = rows[rows["day"] == last_day]
    control_rows = last[last["is_control"]]
    control = control_rows["arm"].iloc[0] if len(control_rows) else last["arm"].iloc[0]
    treat_last = last[~last["is_control"]]
    layer = last["layer"].iloc[0] if "layer" in last and pd.notna(last["layer"].iloc[0]) else "default"

    lat_days = lat[lat["day"].isin(days)] if not lat.empty else lat
    breaches = latency_breaches(lat_days[lat_days["day"] == last_day].to_dict("records"), control, cfg) \
        if not lat_days.empty else []
    srm = value(last.iloc[0], "cum_srm_p") if "cum_srm_p" in last else value(last.iloc[0], "srm_p")

    st.subheader("Verdict")
    for _, row in treat_last.iterrows():
        text, level = verdict(row, cols, cfg, srm, [b for b in breaches if b.arm == row["arm"]])
        getattr(st, level)(text)
    reduction = [value(r, "cuped_variance_reduction") for _, r in treat_last.iterrows()]
    method_line = (f"always-valid mSPRT (mixture τ = {cfg.msprt_tau:.0%} relative lift), valid at every daily look"
                   if method == "always_valid" else "fixed-horizon z-test, valid only at the planned last day")
    cuped_line = (f"CUPED on (variance of the difference −{reduction[0]:.0%})" if cuped and reduction
                  and math.isfinite(reduction[0]) else "CUPED off")
    st.caption(f"Experiment **{experiment}** in layer **{layer}**, days {days[0]}–{last_day}, users as the "
               f"unit, α = {cfg.alpha:g}. Statistics: {method_line}; {cuped_line}; delta-method intervals.")

    metric_cols = st.columns(len(last))
    for col, (_, row) in zip(metric_cols, last.iterrows()):
        lift, p = value(row, cols["lift"]), value(row, cols["p"])
        delta = None if row["is_control"] or not math.isfinite(lift) else f"{lift:+.2%} vs control (p={p:.3g})"
        col.metric(f"{row['arm']} · day {last_day} (days {days[0]}–{last_day} pooled)",
                   f"{value(row, cols['ctr']):.4f}", delta,
                   help=f"{int(value(row, 'cum_users')) if 'cum_users' in row else row['users']} users")
    if srm < cfg.srm_alpha:
        st.error(f"Sample ratio mismatch: p = {srm:.2g} (users per arm against the configured shares); "
                 "the assignment is broken, do not trust these results.")
    else:
        st.caption(f"Sample ratio check on all days so far: p = {srm:.3g}, flagged below {cfg.srm_alpha:g}.")

    view = st.radio("CTR per day", ["cumulative (all days so far)", "each day alone"], horizontal=True)
    w = world[world["day"].isin(days)]
    st.subheader("CTR per arm per day")
    st.caption("Points: CTR with 95 % intervals (delta method, users as the unit). Dashed: the world's oracle "
               "(best possible slates) and random slates, as references.")
    st.altair_chart(ctr_chart(rows, w, cols, view.startswith("cumulative")), width="stretch")
    treat = rows[~rows["is_control"]]
    if not treat.empty:
        st.subheader("Lift over control, all days so far")
        st.altair_chart(lift_chart(treat, cols), width="stretch")

    st.subheader("Latency per stage per arm (wall clock, ms)")
    if not lat_days.empty:
        latency_section(lat_days, control, cfg, last_day)
    chan = tables["channel_latency_daily"]
    chan = chan[chan["arm"].isin(rows["arm"].unique()) & (chan["day"] == last_day)] if not chan.empty else chan
    if not chan.empty:
        channel_latency_table(chan, last_day)

    exposure = tables["exposure_daily"]
    if not exposure.empty:
        exposure_section(exposure[exposure["arm"].isin(rows["arm"].unique()) & exposure["day"].isin(days)])

    st.subheader("Daily table")
    table = rows.merge(w, on=["day", "arm", "requests"], how="left")
    shown = ["day", "arm", "users", "requests", "impressions", "clicks", "ctr", "ctr_ci_low", "ctr_ci_high",
             "lift", "lift_ci_low", "lift_ci_high", "p_value", "srm_p", cols["lift"], cols["lo"], cols["hi"],
             cols["p"], "ctr_expected", "ctr_oracle", "ctr_random"]
    st.dataframe(table[[c for c in dict.fromkeys(shown) if c in table]], hide_index=True)
    lineage_section(tables["model_lineage"], tables["features_consistency"], list(last["arm"]))
    st.caption(online_store_line(tables["online_store_daily"], last_day))


def online_store_line(store: pd.DataFrame, day: int) -> str:
    """The online store on `day`: its local cache's hit rate and the server's round trips (kind
    redis), or that features were served in-process (embedded: no cache, nothing measured)."""
    row = store[store["day"] == day] if not store.empty else store
    if row.empty:
        return f"Online store on day {day}: in-process (embedded), no cache or server to measure."
    r = row.iloc[0]
    rate = "n/a" if pd.isna(r["hit_rate"]) else f"{r['hit_rate']:.1%}"
    server = ("no server round trip" if pd.isna(r["server_p50_ms"]) else
              f"{int(r['round_trips'])} server round trips, p50 {r['server_p50_ms']:.2f} ms, "
              f"p99 {r['server_p99_ms']:.2f} ms")
    return (f"Online store on day {day}: Redis, local cache hit rate {rate} of {int(r['lookups'])} lookups "
            f"({int(r['hits'])} hits, {int(r['misses'])} misses, {int(r['shards'])} shard caches of "
            f"{int(r['cache_size'])} rows); {server}.")


def exposure_section(exposure: pd.DataFrame) -> None:
    """Distinct items shown, concentration of exposure and the personalised share, per arm per day."""
    st.subheader("Exposure and diversity per arm per day")
    st.caption("Items shown: distinct items in the arm's slates that day. Gini: concentration of the arm's "
               "impressions over the whole catalogue (0: even, 1: one item). Personalised: share of impressions "
               "outside the day's K most shown items over all arms (K = slate size).")
    long = exposure.melt(id_vars=["day", "arm"], value_vars=["items_shown", "gini", "personalised_share"],
                         var_name="measure")
    chart = alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("day:O"), y=alt.Y("value:Q", title=None), color="arm:N",
        facet=alt.Facet("measure:N", columns=3)).resolve_scale(y="independent").properties(width=220, height=160)
    st.altair_chart(chart)


def lineage_section(lineage: pd.DataFrame, consistency: pd.DataFrame, arms: list[str]) -> None:
    """Each arm's newest models: the features and source partitions they were trained on."""
    st.subheader("Models: features and sources")
    if not consistency.empty:
        c = consistency.iloc[-1]
        rate = "n/a" if pd.isna(c["match_rate"]) else f"{c['match_rate']:.2%}"
        st.caption(f"Offline/online feature consistency on day {c['day']}: {rate} of {c['compared']} logged "
                   f"(request, item) vectors rebuilt identically from the samples.")
    if lineage.empty:
        st.caption("No model lineage recorded yet.")
        return
    day = lineage["day"].max()
    newest = lineage[lineage["day"] == day]
    st.caption(f"Models trained on day {day}, features version {newest['features_version'].iloc[0]}.")
    for arm in [a for a in arms if a in set(newest["arm"])]:
        with st.expander(f"{arm}: models, features and source tables"):
            st.table(newest[newest["arm"] == arm][["model", "kind", "name", "detail"]].reset_index(drop=True))


main()
