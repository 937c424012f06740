import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from dream_plugin.cli import main
from dream_plugin.harness.data import load_mnist_subset


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
    from dream_plugin.cli.export import write_mnist_raw

    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.5"):
        write_mnist_raw(tmp_path, test_fraction=1.5)


# -- bad targets: one line, nothing half-written (docs/errors.md) ---------------------------------------
def _export(root, capsys):
    code = main(["export-mnist", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    return err


def test_export_to_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "data"
    f.write_text("x")
    assert "export-mnist: '" in _export(f, capsys) and "is a file, but" in _export(f, capsys)


def test_export_where_mnist_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "MNIST").write_text("x")
    assert "MNIST' is a file, but" in _export(tmp_path, capsys)


def test_export_inside_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "data"
    f.write_text("x")
    assert "lies inside" in _export(f / "sub", capsys)


def test_export_to_an_unwritable_folder_is_one_line(capsys, unwritable_dir):
    import os

    assert "is not writable: the folder" in _export(os.path.join(unwritable_dir, "mnist"), capsys)


def test_permission_error_while_writing_leaves_nothing_half_done(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    real = Path.write_bytes
    calls = []

    def flaky(self, data):
        calls.append(self.name)
        if len(calls) == 3:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", flaky)
    err = _export(tmp_path, capsys)
    assert "export-mnist: cannot write '" in err and "Permission denied" in err
    assert list((tmp_path / "MNIST" / "raw").iterdir()) == []  # neither final nor temporary files
