"""Shared plumbing: vector-env adapter, safe checkpoints, callbacks."""
