"""Running offerflow as a team does: the servers started by `offerflow up` (Prefect server,
worker, MLflow UI, decision service). Takes the project; gives running processes and their
status.
"""
