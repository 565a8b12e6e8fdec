"""The ground every stage stands on: the typed project config, the data contract, the project's
paths, the ranking store, experiment tracking (MLflow), fingerprints and shared feature helpers.
Takes offerflow.yaml; gives typed objects and handles. Imports no stage.
"""
