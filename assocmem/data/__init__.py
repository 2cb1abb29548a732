"""Corpora, tokenizers, packing and synthetic tasks."""
