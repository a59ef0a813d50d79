"""Predicting emotions with a trained model: label scoring, generation, the Predictor."""
