"""Evaluation runners: perplexity, recall, Hopfield capacity, set classification."""
