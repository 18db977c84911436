"""Kiri: a web UI for diffusion image models."""

__version__ = "0.1.0"
