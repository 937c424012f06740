"""The measuring harness: the A/B distillation (``ab``), ``diagnose``, the demo, and their data and models."""
