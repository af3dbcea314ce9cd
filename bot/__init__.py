"""Pipecat bridge and bots: the only package that imports pipecat."""
