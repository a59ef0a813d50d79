"""Scoring predictions honestly: weighted F1 and friends, reports, baselines."""
