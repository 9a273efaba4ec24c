"""Rekor v2 (rekor-tiles) support."""
