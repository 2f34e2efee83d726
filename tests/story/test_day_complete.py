"""A day counts as complete, and a resumed campaign skips it, only once every table its report wrote exists."""
from __future__ import annotations

from components.contracts import SCHEMAS
from components.experiment import load_experiment
from components.features.store import build_features
from sim.config import load_scenario
from story import models
from story.campaign import create_campaign
from story.day import run_day
from story.report import report_day
from story.world import publish_catalog


def test_a_day_is_complete_only_with_every_table_its_report_writes(tmp_path):
    c = create_campaign(tmp_path / "c", "t", load_scenario("tiny"), load_experiment("default"), None)
    publish_catalog(c, 0)
    build_features(c.lake, 0)
    models.train_bootstrap(c)
    run_day(c, 0)
    c.models_dir(0).mkdir(parents=True)          # as if day 0's models were published
    before = {t for t in SCHEMAS if c.lake.has(t, 0)}
    assert not c.day_complete(0)
    report_day(c, 0)
    assert c.day_complete(0)
    written = sorted({t for t in SCHEMAS if c.lake.has(t, 0)} - before)
    assert written and "ab_daily" in written
    # A campaign killed after any of the report's writes but the last must run the day again.
    for table in written:
        path = c.lake.path(table, 0)
        data = path.read_bytes()
        path.unlink()
        assert not c.day_complete(0), f"day 0 counted complete without {table}"
        path.write_bytes(data)
    assert c.day_complete(0)
