"""``dream-plugin ab``: an A/B harness that distils with random vs DREAM selection on equal footing.

Reference DC/DM loops in the hosts' style draw their real batches through the ``get_images``
adapter; arms differ only in the selector's settings, never in seeds. See docs/harness.md.
"""

from dream_plugin.harness.ab.cli import add_ab_parser
from dream_plugin.harness.ab.config import ARMS, AbConfig, build_config, defaults_yaml
from dream_plugin.harness.ab.runner import run_ab

__all__ = ["ARMS", "AbConfig", "add_ab_parser", "build_config", "defaults_yaml", "run_ab"]
