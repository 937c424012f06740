import pytest
import torch

from dream_plugin.harness.mosaic import mosaic, tile_sizes


def test_tile_sizes_put_the_remainder_first():
    assert tile_sizes(28, 3) == [10, 9, 9]
    assert tile_sizes(32, 2) == [16, 16]
    assert sum(tile_sizes(31, 4)) == 31


def test_mosaic_places_groups_row_major():
    ipc, factor = 2, 2
    # image value = its index, so each tile's value tells which image landed there
    imgs = torch.arange(ipc * factor**2, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    out = mosaic(imgs, factor)
    assert out.shape == (2, 1, 4, 4)
    for m in range(ipc):
        assert out[m, 0, :2, :2].unique().item() == 0 * ipc + m  # tile 0: group 0
        assert out[m, 0, :2, 2:].unique().item() == 1 * ipc + m  # tile 1: group 1
        assert out[m, 0, 2:, :2].unique().item() == 2 * ipc + m
        assert out[m, 0, 2:, 2:].unique().item() == 3 * ipc + m


def test_mosaic_with_uneven_sizes_keeps_shape():
    out = mosaic(torch.rand(9, 3, 28, 28), 3)
    assert out.shape == (1, 3, 28, 28)


def test_factor_one_is_a_copy():
    x = torch.rand(3, 1, 5, 5)
    out = mosaic(x, 1)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize(
    ("images", "factor", "message"),
    [
        (torch.rand(5, 1, 8, 8), 2, r"needs a multiple of factor\*\*2=4 images \(ipc \* factor\*\*2\), got 5"),
        (torch.rand(4, 8, 8), 2, r"images must be \(N, C, H, W\), got shape \(4, 8, 8\)"),
        (torch.rand(4, 1, 8, 8), 0, r"factor must be an integer >= 1, got 0"),
        (torch.rand(9, 1, 2, 2), 3, r"too small for factor 3"),
    ],
)
def test_bad_mosaic_input(images, factor, message):
    with pytest.raises(ValueError, match=message):
        mosaic(images, factor)
