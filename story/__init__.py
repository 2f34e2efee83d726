"""The simulated day's story: plain functions over typed values, from traffic to tables.

campaign.py  the data directory: manifest, lake, models, world files
world.py     the world's state as a day starts, and the catalogue it announces
plan.py      the day's requests, drawn once, and the arm of each (DayPlan)
models.py    which models serve a day (the bootstrap set for day 0), built by components.serving
serve.py     micro-batches in time order, the world's answer, the stream's visibility rule (ServedDay)
tables.py    the layouts of requests, impressions, latency, features_online and world_daily
day.py       a day end to end, in one process or in shards

No Prefect and no MLflow here: flows/ opens the campaign, calls these, writes and logs.
"""
