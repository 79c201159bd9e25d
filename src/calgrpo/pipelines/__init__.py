"""Kubeflow Pipelines: components (one per stage) and, later, the train and evaluate pipelines."""
