"""Evaluation: scores of generated videos."""
