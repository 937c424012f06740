"""Adapters: thin wrappers over each host codebase's own sampler (shipped as ``dream_plugin.adapters``)."""
