"""Reading and validating data: event files (CSV, NDJSON/XDM, Parquet), the offer catalog and the
profiles, checked by Great Expectations and in DuckDB. Takes files; gives a validated events
snapshot, quarantined rows with their reason, and a report.
"""
