"""A plugin whose observer is misspelled (``selection_don``): it must be rejected, not ignored."""

from dream_plugin import hookimpl

seen = []


@hookimpl
def selection_don(record):
    seen.append(record)
