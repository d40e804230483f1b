"""Prefect flows that orchestrate alpha's steps; the computing lives in `alpha/`."""
