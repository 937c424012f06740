"""``dream-plugin integrate PATH``: recognise a host checkout and write the adapter change for it."""
