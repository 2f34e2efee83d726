"""Prefect flows: orchestration only, thin wrappers around sim and components."""
