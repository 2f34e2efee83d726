"""bench.faults part (a): the map of stages read from a campaign's log, and kill points over all of them."""
from __future__ import annotations

from bench.faults_kills import STAGES, event_key, plan, timeline

LOG = """00:50:28.936 | INFO    | prefect - Starting temporary server on http://127.0.0.1:8680
00:50:34.437 | INFO    | Flow run 'campaign-tiny-default-1d' - Beginning flow run 'campaign-tiny-default-1d' for flow 'campaign'
00:50:34.546 | INFO    | Task run 'prepare_campaign-653' - Finished in state Completed()
00:50:37.587 | INFO    | Flow run 'simulate-day-0' - Beginning subflow run 'simulate-day-0' for flow 'simulate_day'
00:50:37.677 | INFO    | Task run 'publish_catalog-b9b' - Finished in state Completed()
00:50:39.714 | INFO    | Flow run 'build-samples-0' - Beginning subflow run 'build-samples-0' for flow 'build_samples'
00:50:39.956 | INFO    | Task run 'build_samples-039' - Finished in state Completed()
00:50:40.914 | INFO    | Flow run 'train-0' - Beginning subflow run 'train-0' for flow 'train'
00:50:45.242 | INFO    | Task run 'train_rankers-aad' - Finished in state Completed()
Created version '1' of model 'reclab-itemcf-recall-tiny-seed3'.
00:50:47.280 | INFO    | Flow run 'report-0' - Beginning subflow run 'report-0' for flow 'report'
00:50:47.895 | INFO    | Task run 'report_day-a89' - Finished in state Completed()
00:50:49.045 | INFO    | Flow run 'simulate-day-1' - Beginning subflow run 'simulate-day-1' for flow 'simulate_day'
00:50:49.126 | INFO    | Task run 'publish_catalog-29d' - Finished in state Completed()
00:51:02.608 | INFO    | Flow run 'campaign-tiny-default-1d' - Finished in state Completed()"""


def test_events_are_named_alike_in_every_run_and_carry_their_stage():
    assert event_key("12:00 | INFO | Task run 'publish_catalog-29d' - Finished in state Completed()") == \
        "task run publish_catalog finished"
    assert event_key("Created version '1' of model 'x'.") is None
    events = timeline([(float(i), line) for i, line in enumerate(LOG.splitlines(), 1)])
    assert events[0].key == "launch" and events[0].stage == "start"
    by_key = {e.key: e.stage for e in events}
    assert by_key["task run prepare_campaign finished #1"] == "start"
    assert by_key["task run train_rankers finished #1"] == "train"
    # A task that runs every day is told apart by its occurrence.
    assert by_key["task run publish_catalog finished #2"] == "simulate_day"
    assert [e.at for e in events] == sorted(e.at for e in events)


def test_kill_points_cover_every_stage_and_repeat_with_the_seed():
    events = timeline([(float(i), line) for i, line in enumerate(LOG.splitlines(), 1)])
    kills = plan(19, 20, events)
    assert [k.stage for k in kills] == [STAGES[i % len(STAGES)] for i in range(20)]
    assert kills == plan(19, 20, events) and kills != plan(20, 20, events)
    at = {e.key: i for i, e in enumerate(events)}
    for k in kills:
        i = at[k.after]
        assert events[i].stage == k.stage and 0 <= k.delay <= events[i + 1].at - events[i].at
