"""Multi-formation (IDC): tile factor**2 real images into one synthetic image, and decode them back."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dream_plugin.common.inputs import is_integer


def tile_sizes(length: int, factor: int) -> list[int]:
    """Split ``length`` pixels into ``factor`` tiles; the first ``length % factor`` are one pixel larger."""
    base, extra = divmod(length, factor)
    return [base + 1 if i < extra else base for i in range(factor)]


def mosaic(images: torch.Tensor, factor: int, *, mode: str = "nearest") -> torch.Tensor:
    """Tile ``images`` (ipc * factor**2, C, H, W) into (ipc, C, H, W).

    Images are read in groups of ipc: group k fills tile k (row-major over the factor x factor grid)
    of every output image, so output m holds images m, ipc + m, 2 ipc + m, ... Each image is resized
    to its tile with ``mode`` interpolation (nearest by default, as IDC's multi-formation does).
    """
    if not is_integer(factor) or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
    factor = int(factor)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    groups = factor * factor
    if images.shape[0] % groups != 0 or images.shape[0] == 0:
        raise ValueError(
            f"mosaic needs a multiple of factor**2={groups} images (ipc * factor**2), got {images.shape[0]}"
        )
    if factor == 1:
        return images.clone()
    ipc = images.shape[0] // groups
    _, c, h, w = images.shape
    if h < factor or w < factor:
        raise ValueError(f"images of {h}x{w} pixels are too small for factor {factor}")
    out = images.new_empty((ipc, c, h, w))
    k = 0
    top = 0
    for th in tile_sizes(h, factor):
        left = 0
        for tw in tile_sizes(w, factor):
            part = images[k * ipc : (k + 1) * ipc]
            out[:, :, top : top + th, left : left + tw] = F.interpolate(part, size=(th, tw), mode=mode)
            left += tw
            k += 1
        top += th
    return out


def unmosaic(images: torch.Tensor, factor: int, *, mode: str = "bilinear") -> torch.Tensor:
    """Decode stored images (ipc, C, H, W) into their (ipc * factor**2, C, H, W) training images.

    The inverse layout of :func:`mosaic`: tile k (row-major) of stored image m becomes output
    ``k * ipc + m``, resized back to H x W with ``mode`` interpolation (bilinear, as IDC's decoder
    upsamples). Tiles are cut with :func:`tile_sizes`, the same grid :func:`mosaic` fills, so for
    sides not divisible by ``factor`` the cut differs from IDC's (which pads to a multiple of
    ``factor`` and cuts equal tiles). Differentiable: gradients flow back to ``images``.
    """
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if factor == 1:
        return images
    _, _, h, w = images.shape
    if h < factor or w < factor:
        raise ValueError(f"images of {h}x{w} pixels are too small for factor {factor}")
    tiles = []
    top = 0
    for th in tile_sizes(h, factor):
        left = 0
        for tw in tile_sizes(w, factor):
            part = images[:, :, top : top + th, left : left + tw]
            kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
            tiles.append(F.interpolate(part, size=(h, w), mode=mode, **kwargs))
            left += tw
        top += th
    return torch.cat(tiles)


def decode_synset(syn: torch.Tensor, labels: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set a stored synthetic set decodes into: every stored image gives factor**2 images
    of its label (``syn`` and ``labels`` themselves for factor 1)."""
    if factor == 1:
        return syn, labels
    return unmosaic(syn, factor), labels.repeat(factor * factor)
