"""Leaf utilities shared by `sim` and `components`; imports nothing of ours."""
