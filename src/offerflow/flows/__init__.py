"""The Prefect orchestration: thin flows and tasks over the library's steps (caching, retries,
artifacts, logging). Takes a project file; gives flow runs. The only package that imports
Prefect.
"""
