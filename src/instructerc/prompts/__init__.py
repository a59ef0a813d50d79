"""Turning dialogues into (prompt, target) examples: templates, tasks, token budget, encoding."""
