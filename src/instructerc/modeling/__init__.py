"""Backbones: any Hugging Face causal LM, and the embedded SmolLM2-135M-Instruct."""
