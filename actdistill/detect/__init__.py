"""Temporal action detection: synthetic untrimmed videos, snippet features, an anchor-free detector, its KD."""
