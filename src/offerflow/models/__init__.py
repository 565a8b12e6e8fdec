"""Training the AI models end to end: fit, evaluate on a holdout, log to MLflow, register, and
promote champions (locally or on a Dask cluster). Takes a project's data and model settings;
gives registered models and training results.
"""
