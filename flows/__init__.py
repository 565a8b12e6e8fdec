"""Prefect flows: thin orchestration of the offerflow library."""
