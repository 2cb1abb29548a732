"""Experiments of the modern-Hopfield paper: capacity, retrieval pictures, multiple-instance learning, tabular data."""
