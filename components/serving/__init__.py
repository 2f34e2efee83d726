"""Serving: the arm's pipeline of recall channels, merge, ranking; timed per stage."""
from components.serving.config import ArmConfig, ExperimentConfig, ModelsConfig, load_experiment
from components.serving.pipeline import Pipeline, ServeResult

__all__ = ["ArmConfig", "ExperimentConfig", "ModelsConfig", "Pipeline", "ServeResult", "load_experiment"]
