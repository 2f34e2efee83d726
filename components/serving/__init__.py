"""Serving: the arm's pipeline of recall channels, merge, ranking; timed per stage."""
from components.serving.build import build_pipelines
from components.serving.config import ArmConfig
from components.serving.pipeline import Pipeline, ServeResult, channel_lists

__all__ = ["ArmConfig", "Pipeline", "ServeResult", "build_pipelines", "channel_lists"]
