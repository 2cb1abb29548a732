"""Configs and models built from the layers: language models and set models."""
