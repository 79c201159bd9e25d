"""Enumerable toy environments that prove estimators exact (tests and benchmarks use them)."""
