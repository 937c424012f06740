"""``dream-plugin diagnose``: how well a selected batch's gradient stands for its whole class.

The mechanism behind representative matching, measured without distillation: for a network
(fresh, trained on real data, or the user's), every class and every strategy, compare the loss
gradient on the selected batch with the gradient on the whole class pool.
"""

from dream_plugin.harness.diagnose.config import DiagnoseConfig
from dream_plugin.harness.diagnose.gradients import batch_gradient_stats, per_sample_gradients
from dream_plugin.harness.diagnose.run import run_diagnose

__all__ = ["DiagnoseConfig", "batch_gradient_stats", "per_sample_gradients", "run_diagnose"]
