"""instructerc: emotion recognition in conversation as instruction-tuned generation."""

__version__ = "0.1.0"
