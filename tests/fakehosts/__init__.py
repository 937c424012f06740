"""Fake host codebases for the adapter tests.

Each one recreates, in our own words, the *contract* of a dataset-distillation codebase's sampler
(what it is called with, when, what it returns, which random generator it draws from), small
enough to run in a fraction of a second on CPU. None of them copies the hosts' code.
"""
