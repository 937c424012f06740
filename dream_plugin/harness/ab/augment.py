"""A small differentiable augmentation in the spirit of DSA (Siamese augmentation).

One random affine transform (translation "crop", zoom "scale", horizontal "flip") is drawn from
an explicit seed and applied to a whole batch through ``grid_sample``, so gradients flow back to
synthetic images, and calling it with the same seed on the real and the synthetic batch applies
the very same transform to both. It never touches a global random generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CROP_FRACTION = 0.125
"""Largest translation, as a fraction of the image side (DSA's crop ratio)."""
SCALE_RANGE = 0.2
"""Zoom factor drawn from [1 - r, 1 + r] (DSA's scale ratio)."""


def augment(x: torch.Tensor, strategy: str, seed: int) -> torch.Tensor:
    """Apply the operations named in ``strategy`` (joined by '_') with parameters drawn from ``seed``."""
    ops = [o for o in strategy.split("_") if o]
    if not ops:
        return x
    g = torch.Generator().manual_seed(int(seed))
    sx = sy = 1.0
    tx = ty = 0.0
    flip = 1.0
    for op in ops:
        if op == "scale":
            sx = 1.0 + SCALE_RANGE * (2 * float(torch.rand((), generator=g)) - 1)
            sy = 1.0 + SCALE_RANGE * (2 * float(torch.rand((), generator=g)) - 1)
        elif op == "crop":
            # affine_grid works in [-1, 1], so a shift of a fraction f of the side is 2f
            tx = 2 * CROP_FRACTION * (2 * float(torch.rand((), generator=g)) - 1)
            ty = 2 * CROP_FRACTION * (2 * float(torch.rand((), generator=g)) - 1)
        elif op == "flip":
            flip = -1.0 if float(torch.rand((), generator=g)) < 0.5 else 1.0
        else:
            raise ValueError(f"augmentation {op!r} is not allowed; expected crop, scale or flip")
    theta = torch.tensor([[flip * sx, 0.0, tx], [0.0, sy, ty]], dtype=x.dtype, device=x.device)
    theta = theta.unsqueeze(0).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
