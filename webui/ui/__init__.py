"""Kiri's Gradio UI: one thin module per tab, each calling the engine."""
