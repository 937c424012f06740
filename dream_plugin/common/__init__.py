"""Shared by every layer: input and path checks, the config error type, seed derivation, optional extras."""
