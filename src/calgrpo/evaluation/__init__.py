"""Evaluation: Verification@k with bootstrap confidence intervals, reports, promotion."""
