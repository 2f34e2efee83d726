"""Generative recall (after TIGER): semantic ids, a next-item transformer, constrained beam search."""
from components.recall.generative.channel import GenerativeConfig, GenerativeRecaller

__all__ = ["GenerativeConfig", "GenerativeRecaller"]
