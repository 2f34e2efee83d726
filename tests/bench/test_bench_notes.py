"""Benchmarks word their notes from the run: the machine's state and the campaign's own settings."""
from __future__ import annotations

import os
from dataclasses import replace

from bench.generative_campaign import recall_note, serving
from bench.results import conditions, conditions_note
from components.experiment import load_experiment
from story.campaign import create_campaign
from sim.config import load_scenario


def test_conditions_are_this_process_and_machine():
    c = conditions((7.25, 1.0, 0.5))
    assert c["niceness"] == os.nice(0) and c["cores"] == os.cpu_count()
    assert c["affinity"] == len(os.sched_getaffinity(0)) and c["load_average_before"] == [7.25, 1.0, 0.5]
    note = conditions_note(c)
    assert f"niceness {os.nice(0)}" in note and "7.2 before" in note and f"on {os.cpu_count()} cores" in note


def test_serving_notes_follow_the_campaigns_manifest(tmp_path):
    exp = load_experiment("generative")
    arms = {name: replace(arm, parallel_recall=(name == "treatment")) for name, arm in exp.arms.items()}
    exp = replace(exp, arms=arms, serve_batch_size=32)
    create_campaign(tmp_path, "notes", load_scenario("tiny"), exp, None)
    how = serving(tmp_path)
    assert how == {"serve_batch_size": 32, "parallel_recall": {"control": False, "treatment": True}}
    note = recall_note(how["parallel_recall"])
    assert note.startswith("treatment recall in parallel") and "control recall one channel after another" in note
