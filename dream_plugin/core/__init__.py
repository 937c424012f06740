"""The plugin core: hook specs, the plugin manager, configuration, requests, the selector, rank consistency."""
