"""``dream-plugin diagnose``: gradient statistics checked against closed-form gradients."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from dream_plugin.cli import main
from dream_plugin.core.config import ConfigError
from dream_plugin.harness.diagnose import DiagnoseConfig, batch_gradient_stats, per_sample_gradients, run_diagnose
from dream_plugin.harness.diagnose.gradients import dc_distance, idc_distance, split_layers


class PooledLinear(nn.Module):
    """logits = W · mean_spatial(x), W a 1x1 convolution without bias: gradients in closed form."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def closed_form(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample CE loss and dL/dW = (softmax(W m) - e_y) m^T, m the spatial mean of x."""
    m = x.mean(axis=(2, 3))  # (N, C)
    logits = m @ w.T  # (N, K)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    losses = -np.log(p[np.arange(len(y)), y])
    onehot = np.eye(w.shape[0])[y]
    grads = np.einsum("nk,nc->nkc", p - onehot, m).reshape(len(y), -1)
    return losses, grads


@pytest.fixture
def tiny_problem():
    torch.manual_seed(0)
    net = PooledLinear(3, 4).double()
    x = torch.randn(7, 3, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    return net, x, y


def test_per_sample_gradients_match_the_closed_form(tiny_problem):
    net, x, y = tiny_problem
    losses, grads, layout = per_sample_gradients(net, x, y, chunk=3)
    want_l, want_g = closed_form(net.conv.weight.detach().numpy()[:, :, 0, 0], x.numpy(), y.numpy())
    np.testing.assert_allclose(losses.numpy(), want_l, rtol=1e-10)
    np.testing.assert_allclose(grads.numpy(), want_g, rtol=1e-10, atol=1e-14)
    assert layout == [("conv.weight", torch.Size([4, 3, 1, 1]))]
    assert net.conv.weight.grad is None and net.training  # nothing written, mode kept


def test_batch_statistics_equal_a_hand_computation(tiny_problem):
    net, x, y = tiny_problem
    _, grads, layout = per_sample_gradients(net, x, y)
    _, g = closed_form(net.conv.weight.detach().numpy()[:, :, 0, 0], x.numpy(), y.numpy())
    pos = torch.tensor([0, 2, 5])
    gb, gp = g[[0, 2, 5]].mean(0), g.mean(0)
    st = batch_gradient_stats(grads, pos, layout)
    assert st["cosine"] == pytest.approx(gb @ gp / (np.linalg.norm(gb) * np.linalg.norm(gp)), rel=1e-10)
    assert st["rel_error"] == pytest.approx(np.linalg.norm(gb - gp) / np.linalg.norm(gp), rel=1e-10)
    assert st["l1_distance"] == pytest.approx(np.abs(gb - gp).sum(), rel=1e-10)
    assert st["mse_distance"] == pytest.approx(((gb - gp) ** 2).sum(), rel=1e-10)
    rows_b, rows_p = gb.reshape(4, 3), gp.reshape(4, 3)
    cos_rows = (rows_b * rows_p).sum(1) / (np.linalg.norm(rows_b, axis=1) * np.linalg.norm(rows_p, axis=1) + 1e-6)
    assert st["dc_distance"] == pytest.approx((1 - cos_rows).sum(), rel=1e-8)
    assert st["distance"] == st["l1_distance"]  # the metric chosen (l1 by default)
    for metric in ("l1", "mse", "dc"):
        assert batch_gradient_stats(grads, pos, layout, metric=metric)["distance"] == st[f"{metric}_distance"]
    assert st["batch_norm"] == pytest.approx(np.linalg.norm(gb)) and st["pool_norm"] == pytest.approx(np.linalg.norm(gp))
    # the whole pool as the batch: perfect agreement
    whole = batch_gradient_stats(grads, torch.arange(7), layout)
    assert whole["cosine"] == pytest.approx(1.0) and whole["rel_error"] == pytest.approx(0.0, abs=1e-12)


def test_distances_skip_what_dc_and_idc_skip():
    a = [torch.ones(2, 3, 1, 1), torch.ones(5), torch.ones(4, 6)]
    b = [torch.zeros(2, 3, 1, 1), torch.zeros(5), -torch.ones(4, 6)]
    assert idc_distance(a, b) == 6.0  # only the convolution weight
    assert idc_distance(a, b, "mse") == 6.0
    # DC: 1-D skipped; zero vs ones has cosine 0 (1 each of 2 rows); opposite rows have cosine -1 (2 each of 4)
    assert dc_distance(a, b) == pytest.approx(2 * 1.0 + 4 * 2.0, rel=1e-5)
    flat = torch.arange(12.0)
    parts = split_layers(flat, [("a", torch.Size([2, 3])), ("b", torch.Size([6]))])
    assert parts[0].shape == (2, 3) and parts[1].tolist() == [6, 7, 8, 9, 10, 11]


def test_diagnose_runs_end_to_end_on_digits(tmp_path):
    cfg = DiagnoseConfig(dataset="digits", networks=("fresh", "trained:5"), sizes=(4, 8), draws=3, width=8,
                         depth=2, subsample=2, metric="dc")
    res = run_diagnose(cfg, out=tmp_path)
    on_disk = json.loads((tmp_path / "diagnose.json").read_text())
    assert (tmp_path / "diagnose.png").stat().st_size > 1000
    assert [n["network"] for n in on_disk["networks"]] == ["fresh", "trained:5"]
    for net in res["networks"]:
        got = {(r["strategy"], r["n"]) for r in net["rows"]}
        assert got == {(s, n) for s in cfg.strategies for n in cfg.sizes}
        for r in net["rows"]:
            assert r["classes"] == 10 and -1 <= r["cosine"] <= 1 and r["rel_error"] >= 0
            assert all(math.isfinite(r[f"{m}_distance"]) for m in ("l1", "mse", "dc"))
            assert r["distance"] == r["dc_distance"]  # --metric dc
            if r["strategy"] != "random":
                assert 0 <= r["random_better"] <= 1 and 0 <= r["random_closer"] <= 1
                random_row = next(x for x in net["rows"] if x["strategy"] == "random" and x["n"] == r["n"])
                # vs random: the strategy's distance minus the random draws' mean, class by class
                assert r["vs_random"] == pytest.approx(r["distance"] - random_row["distance"], abs=1e-9)
        preds = {(p["strategy"], p["n"]): p for p in net["comparisons"]}
        assert set(preds) == {(s, n) for s in cfg.strategies if s != "random" for n in cfg.sizes}
        for p in preds.values():
            assert p["metric"] == "dc" and p["closer_than_random"] == (p["vs_random"] < 0)
        assert set(net["distributions"]) == {"pool", "random", "dream", "dream+", "herding", "kcenter"}
        assert net["distributions"]["pool"]["loss"]["count"] == sum(int(p.numel()) for p in _pools())
    assert "network fresh" in res["table"] and "dc dist" in res["table"]
    assert "does not forecast an A/B result" in res["table"] and "predicts" not in res["table"]
    assert "by dc at n=8: dream's batches are" in res["table"]


def _pools():
    from dream_plugin.harness.data import load_dataset

    return load_dataset("digits").class_indices()


def test_diagnose_config_errors_name_the_option():
    with pytest.raises(ConfigError, match="networks"):
        DiagnoseConfig(networks=("pretrained",)).validate()
    with pytest.raises(ConfigError, match="strategies"):
        DiagnoseConfig(strategies=("nosuch",)).validate()
    with pytest.raises(ConfigError, match="sizes"):
        DiagnoseConfig(sizes=(0,)).validate()
    with pytest.raises(ConfigError, match=r"metric \(--metric\): 'cos' is not allowed; expected one of l1, mse, dc"):
        DiagnoseConfig(metric="cos").validate()


def test_diagnose_cli_with_a_checkpoint(tmp_path, capsys):
    from dream_plugin.harness.data import load_dataset
    from dream_plugin.harness.diagnose.networks import convnet

    data = load_dataset("digits")
    cfg = DiagnoseConfig(width=8, depth=2)
    torch.save(convnet(cfg, data, 5, torch.device("cpu")).state_dict(), tmp_path / "net.pt")
    rc = main(["diagnose", "--dataset", "digits", "--networks", f"checkpoint:{tmp_path / 'net.pt'}", "--sizes", "4",
               "--draws", "2", "--width", "8", "--depth", "2", "--strategies", "random", "dream",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "checkpoint:" in out and (tmp_path / "out" / "diagnose.json").is_file()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["diagnose", "--dataset", "digits", "--networks", f"checkpoint:{bad}", "--width", "8",
                 "--out", str(tmp_path / "o2")]) == 2
    assert "is not a state_dict" in capsys.readouterr().err


def test_embed_input_raw_embeds_unnormalised_pixels(monkeypatch):
    """--embed-input raw: DREAM clusters features of [0, 1] pixels (as the official code embeds), while
    gradients stay on the normalised images."""
    from dream_plugin.harness.diagnose import run as run_module

    seen = []
    real = run_module.embed_images

    def spy(embedder, x, **kwargs):
        seen.append((float(x.min()), float(x.max())))
        return real(embedder, x, **kwargs)

    monkeypatch.setattr(run_module, "embed_images", spy)
    base = dict(dataset="digits", networks=("fresh",), strategies=("random", "dream"), sizes=(4,), draws=2, width=8,
                depth=2)
    run_diagnose(DiagnoseConfig(**base, embed_input="raw"), write=False)
    assert len(seen) == 10 and all(0.0 <= lo and hi <= 1.0 for lo, hi in seen)
    seen.clear()
    res = run_diagnose(DiagnoseConfig(**base), write=False)
    assert min(lo for lo, _ in seen) < 0.0  # normalised images have negative pixels
    assert res["config"]["embed_input"] == "normalized"
    with pytest.raises(ConfigError, match=r"embed_input \(--embed-input\): 'pixels' is not allowed; expected one of "
                                          r"normalized, raw"):
        DiagnoseConfig(embed_input="pixels").validate()


def test_sizes_above_the_smallest_class_are_refused_naming_the_size(tmp_path, capsys):
    counts = [int(p.numel()) for p in _pools()]
    smallest = min(counts)
    cfg = DiagnoseConfig(dataset="digits", networks=("fresh",), sizes=(4, smallest + 1), draws=2, width=8, depth=2)
    want = (f"sizes (--sizes): {smallest + 1} is above the class size: class {counts.index(smallest)} of digits has "
            f"{smallest} training images (the smallest class); expected batch sizes between 1 and {smallest}")
    with pytest.raises(ConfigError) as err:
        run_diagnose(cfg, write=False)
    assert str(err.value) == want
    out = tmp_path / "out"
    assert main(["diagnose", "--dataset", "digits", "--sizes", "4", str(smallest + 1), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"dream-plugin: error: {want}"
    assert not out.exists()  # refused before any work
    # the smallest class's size itself is a valid batch: the whole class
    res = run_diagnose(DiagnoseConfig(dataset="digits", networks=("fresh",), strategies=("random", "dream"),
                                      sizes=(smallest,), draws=2, width=8, depth=2), write=False)
    assert {r["n"] for r in res["networks"][0]["rows"]} == {smallest}


def test_diagnose_shows_progress_on_stderr_unless_no_progress(tmp_path, capsys):
    args = ["diagnose", "--dataset", "digits", "--networks", "fresh", "--strategies", "random", "--sizes", "4",
            "--draws", "2", "--width", "8", "--depth", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "diagnose:" in captured.err and "10/10 [" in captured.err  # a bar over every (network, class)
    assert "network fresh: test accuracy" in captured.out
    assert main([*args, "--no-progress", "--out", str(tmp_path / "b")]) == 0
    assert "diagnose:" not in capsys.readouterr().err
