"""Evaluation: held-out perplexity (and, later, recall and Hopfield experiments)."""
