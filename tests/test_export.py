import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from dream_plugin.cli import main
from dream_plugin.data import load_mnist_subset


def test_export_mnist_is_read_by_torchvision_without_download(tmp_path, capsys):
    assert main(["export-mnist", str(tmp_path)]) == 0
    assert "wrote 4000 train / 1000 test images" in capsys.readouterr().out
    train = MNIST(str(tmp_path), train=True, download=False)
    test = MNIST(str(tmp_path), train=False, download=False)
    assert len(train) == 4000 and len(test) == 1000
    assert train.data.dtype == torch.uint8 and tuple(train.data.shape[1:]) == (28, 28)
    assert np.bincount(train.targets.numpy()).tolist() == [400] * 10
    # the same images and split as our own loader: compare after the same normalisation
    ours = load_mnist_subset()
    x = train.data.float().div(255).unsqueeze(1)
    x = (x - ours.mean[0]) / ours.std[0]
    assert torch.allclose(x, ours.train_images, atol=1e-5)
    assert torch.equal(train.targets, ours.train_labels)


def test_export_rejects_bad_fraction(tmp_path):
    from dream_plugin.export import write_mnist_raw

    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.5"):
        write_mnist_raw(tmp_path, test_fraction=1.5)
