"""reclab dashboard: CTR per arm per day against oracle and random, and latency per stage.

Reads the lake (never writes). Run with `reclab dashboard --data-dir data`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from components.contracts import STAGES
from components.lake import Lake, LakeError


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
        for name in ("ab_daily", "latency_daily", "world_daily"):
            tables[name] = con.sql(f"SELECT * FROM {name} ORDER BY day").df() if lake.days(name) else pd.DataFrame()
    return tables


def ctr_chart(ab: pd.DataFrame, world: pd.DataFrame) -> alt.LayerChart:
    base = alt.Chart(ab).encode(x=alt.X("day:O", title="day"), color=alt.Color("arm:N"))
    band = base.mark_errorbar(ticks=True).encode(y=alt.Y("ctr_ci_low:Q", title="CTR"), y2="ctr_ci_high:Q")
    line = base.mark_line(point=True).encode(
        y="ctr:Q", tooltip=["day", "arm", alt.Tooltip("ctr:Q", format=".4f"),
                            alt.Tooltip("ctr_ci_low:Q", format=".4f"), alt.Tooltip("ctr_ci_high:Q", format=".4f")])
    ref = (world.groupby("day", as_index=False)[["ctr_oracle", "ctr_random"]].mean()
           .melt("day", var_name="reference", value_name="ctr"))
    ref["reference"] = ref["reference"].map({"ctr_oracle": "oracle", "ctr_random": "random"})
    refs = alt.Chart(ref).mark_line(strokeDash=[6, 4], color="grey").encode(
        x="day:O", y="ctr:Q", detail="reference:N", tooltip=["day", "reference", alt.Tooltip("ctr:Q", format=".4f")])
    labels = alt.Chart(ref[ref["day"] == ref["day"].max()]).mark_text(align="left", dx=6, color="grey").encode(
        x="day:O", y="ctr:Q", text="reference:N")
    return (refs + labels + band + line).properties(height=320)


def main() -> None:
    st.set_page_config(page_title="reclab", layout="wide")
    root = data_dir()
    manifest = root / "campaign.json"
    title = json.loads(manifest.read_text())["name"] if manifest.is_file() else str(root)
    st.title("reclab: A/B arms")
    st.caption(f"campaign **{title}** · data in `{root.resolve()}`")
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
    experiment = st.selectbox("experiment", experiments)
    with_bootstrap = st.checkbox("show the bootstrap day (logging policy)", value=False)
    shown = ab[(ab["experiment"] == experiment) | (with_bootstrap & (ab["experiment"] == "bootstrap"))]
    days = sorted(shown["day"].unique())
    w = world[world["day"].isin(days)]

    st.subheader("CTR per arm per day")
    st.caption("Points: observed CTR with 95 % intervals (delta method, users as the unit). "
               "Dashed: the world's oracle (best possible slates) and random slates, as references.")
    st.altair_chart(ctr_chart(shown, w), width="stretch")

    last = shown[shown["day"] == max(days)]
    cols = st.columns(len(last))
    for col, (_, row) in zip(cols, last.iterrows()):
        delta = None if pd.isna(row["lift"]) else f"{row['lift']:+.1%} vs control (p={row['p_value']:.3g})"
        col.metric(f"{row['arm']} · day {row['day']}", f"{row['ctr']:.4f}", delta)
    srm = last["srm_p"].iloc[0]
    if srm < 0.001:
        st.error(f"Sample ratio mismatch on day {max(days)}: p = {srm:.2g}; do not trust these results.")
    else:
        st.caption(f"Sample ratio check on day {max(days)}: p = {srm:.3g} (flagged below 0.001).")

    st.subheader("Latency per stage per arm (wall clock, ms)")
    lat = lat[lat["day"].isin(days)]
    stage_rows = lat.melt(["day", "arm", "stage"], ["p50", "p99"], var_name="percentile", value_name="ms")
    chart = alt.Chart(stage_rows).mark_line(point=True).encode(
        x="day:O", y=alt.Y("ms:Q", title="ms"), color="arm:N", strokeDash="percentile:N",
        tooltip=["day", "arm", "stage", "percentile", alt.Tooltip("ms:Q", format=".2f")],
    ).properties(height=180, width=260).facet(column=alt.Column("stage:N", sort=list(STAGES)))
    st.altair_chart(chart)

    st.subheader("Daily table")
    table = shown.merge(w, on=["day", "arm", "requests"], how="left")
    st.dataframe(table[["day", "arm", "users", "requests", "impressions", "clicks", "ctr", "ctr_ci_low",
                        "ctr_ci_high", "lift", "lift_ci_low", "lift_ci_high", "p_value", "srm_p",
                        "ctr_expected", "ctr_oracle", "ctr_random"]], hide_index=True)


main()
