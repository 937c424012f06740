"""What else meets a host run: the records and logging observers, and ``dream-plugin integrate``."""
