"""Labelers: synthetic (from a transition matrix) and, later, vision-language models."""
