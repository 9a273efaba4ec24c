"""Clients of Rekor logs and the models of what they answer."""
