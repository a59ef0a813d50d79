"""Grids of training runs (ablations, data scaling, label spaces) and their result tables."""
