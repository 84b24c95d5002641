"""Generating training data with teacher models (Self-Instruct)."""
