"""Kiri's core: models, samplers, generation, outputs. Imports no UI code.

Heavy libraries (torch, diffusers) are imported inside the functions that need them so that
importing the engine, and serving the first page, stays fast.
"""
