"""The day's report tables: A/B statistics and latency percentiles, per arm."""
from __future__ import annotations

from components import reports
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
    c.lake.refresh_catalog()
    return reports.summary_rows(c.lake, [day])
