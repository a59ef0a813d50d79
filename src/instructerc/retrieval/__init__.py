"""Demonstration retrieval: sentence embeddings of training utterances, searched leak-free."""
