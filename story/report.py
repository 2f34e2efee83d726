"""The day's report tables: A/B statistics and latency percentiles, per arm."""
from __future__ import annotations

from components import exposure, recall_eval, reports
from story.campaign import Campaign
from story.plan import arms_of_day, control_of_day, layer_of_day


def report_day(c: Campaign, day: int) -> list[dict]:
    """Write ab_daily, latency_daily and channel_latency_daily for `day`; return the day's summary rows."""
    experiment, arms = arms_of_day(c, day)
    exp = c.experiment
    reports.ab_daily(c.lake, day, experiment, {n: a.share for n, a in arms.items()}, control_of_day(c, day),
                     layer=layer_of_day(c, day), exclude_users=exp.forced_users(), covariate_day=0,
                     analysis=exp.analysis)
    reports.latency_daily(c.lake, day)
    reports.channel_latency_daily(c.lake, day)
    exposure.exposure_daily(c.lake, day)
    c.lake.refresh_catalog()
    return reports.summary_rows(c.lake, [day])


def summary_markdown(rows: list[dict], day: int, campaign: str, recall: list[dict] | None = None) -> str:
    """The day's A/B summary (and recall table) in markdown, for the Prefect UI."""
    lines = [f"# {campaign}: day {day}", "",
             "| arm | requests | CTR | 95% CI | lift | p | E[CTR] | oracle | random | p99 ms "
             "| new-item impressions | new-item clicks | items shown | Gini | personalised |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    share = lambda v: "" if v is None else f"{v:.1%}"  # noqa: E731
    for r in rows:
        lift = "" if r["lift"] is None else f"{r['lift']:+.1%}"
        p = "" if r["p_value"] is None else f"{r['p_value']:.3g}"
        lines.append(f"| {r['arm']} | {r['requests']} | {r['ctr']:.4f} | [{r['ctr_ci_low']:.4f}, "
                     f"{r['ctr_ci_high']:.4f}] | {lift} | {p} | {r['ctr_expected']:.4f} | "
                     f"{r['ctr_oracle']:.4f} | {r['ctr_random']:.4f} | {r['p99']:.2f} | "
                     f"{share(r.get('new_impression_share'))} | {share(r.get('new_click_share'))} | "
                     f"{r.get('items_shown') or ''} | {'' if r.get('gini') is None else format(r['gini'], '.2f')} | "
                     f"{share(r.get('personalised_share'))} |")
    lines += ["", "New-item shares: of the day's impressions and clicks, those on items that arrived that "
              "day (on day 0 every item is new)."]
    if recall:
        lines += ["", "## Recall against the day's clicks", "",
                  "Candidates replayed from the models and features that served the day; recall over each "
                  "user's clicked items not already in their history. Exposure bias: clicks land only on shown "
                  "items, which the serving arm's own merge chose, so rows with 'in arm' = yes are inflated; "
                  "compare channels on the 'no' rows.", "", *recall_eval.markdown(recall)]
    return "\n".join(lines)
