"""`dream-plugin precompute`, the picks file and the `precomputed` strategy."""

from __future__ import annotations

import sys

import pytest
import torch

from dream_plugin.cli import main
from dream_plugin.engine.clustering import nearest_unique, run_kmeans
from dream_plugin.core.config import ConfigError, PluginSettings, Settings
from dream_plugin.core.manager import build_plugin_manager
from dream_plugin.harness.models import ConvNet
from dream_plugin.engine.precompute import (
    FORMAT,
    Fingerprint,
    KMeansOptions,
    PicksFileError,
    load_picks,
    partial_dir,
    precompute_dataset,
    precompute_from_features,
    synthetic_features,
)
from dream_plugin.core.selector import Selector, derive_seed

KM = KMeansOptions(max_iter=30)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def feats():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(30 + 5 * c, 6, generator=g) + 3 * c for c in range(4)]


@pytest.fixture(scope="module")
def digits():
    from dream_plugin.harness.data import load_dataset

    return load_dataset("digits")


def selector(path, **opts) -> Selector:
    settings = Settings(strategy="precomputed", options={"precomputed": {"path": str(path), **opts}})
    return Selector(settings, plugin_manager=build_plugin_manager(PluginSettings(autoload=False)))


# ------------------------------------------------------------------------------------- engine
def test_picks_are_dream_picks_of_each_class_and_the_file_is_fingerprinted(tmp_path, feats):
    out = tmp_path / "picks.pt"
    rep = precompute_from_features(feats, [5, 3], out, seed=7, kmeans=KM, progress=False)
    assert rep.computed == [0, 1, 2, 3] and rep.reused == [] and rep.feature_dim == 6
    assert not partial_dir(out).exists()
    f = load_picks(out)
    assert f.ks == (3, 5) and f.feature_dim == 6
    assert f.fingerprint == Fingerprint.from_pool_sizes([30, 35, 40, 45])
    assert f.fingerprint.num_items == 150 and f.num_classes == 4
    for c, x in enumerate(feats):
        for k in (3, 5):
            res = run_kmeans(x, k, max_iter=30, tol=1e-4, generator=torch.Generator().manual_seed(derive_seed(7, "precompute", c, k)))
            expected, _ = nearest_unique(x, res.centroids)
            assert torch.equal(f.positions(c, k), expected)
            assert torch.allclose(f.centroids[k][c], res.centroids)
    raw = torch.load(out, weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == 1 and raw["pool_sizes"] == [30, 35, 40, 45]


def test_interrupted_run_resumes_without_recomputing_finished_classes(tmp_path, feats):
    ref = tmp_path / "ref.pt"
    precompute_from_features(feats, [4], ref, kmeans=KM, progress=False)
    out = tmp_path / "picks.pt"
    asked: list[int] = []

    def crashing(c: int) -> torch.Tensor:
        asked.append(c)
        if c == 2:
            raise KeyboardInterrupt  # as a Ctrl-C / preemption in the middle of class 2
        return feats[c]

    sizes = [x.shape[0] for x in feats]
    with pytest.raises(KeyboardInterrupt):
        precompute_from_features(crashing, [4], out, pool_sizes=sizes, kmeans=KM, progress=False)
    assert not out.exists()
    assert sorted(p.name for p in partial_dir(out).glob("class_*.pt")) == ["class_000000.pt", "class_000001.pt"]
    assert not list(partial_dir(out).glob(".*tmp*"))  # nothing half-written left behind

    asked.clear()
    rep = precompute_from_features(lambda c: asked.append(c) or feats[c], [4], out, pool_sizes=sizes, kmeans=KM, progress=False)
    assert asked == [2, 3] and rep.reused == [0, 1] and rep.computed == [2, 3]
    assert torch.equal(load_picks(out).picks[4], load_picks(ref).picks[4])
    assert not partial_dir(out).exists()


def test_partial_run_of_another_job_is_not_mixed_in(tmp_path, feats):
    out = tmp_path / "picks.pt"

    def crash_at_1(c):
        if c == 1:
            raise KeyboardInterrupt
        return feats[c]

    sizes = [x.shape[0] for x in feats]
    with pytest.raises(KeyboardInterrupt):
        precompute_from_features(crash_at_1, [4], out, pool_sizes=sizes, kmeans=KM, progress=False)
    with pytest.raises(ValueError, match=r"holds an interrupted run of a different job \(differs in: ks\); delete it or pass --restart"):
        precompute_from_features(feats, [4, 6], out, kmeans=KM, progress=False)
    rep = precompute_from_features(feats, [4, 6], out, kmeans=KM, progress=False, restart=True)
    assert rep.reused == [] and load_picks(out).ks == (4, 6)


@pytest.mark.parametrize(
    ("ks", "msg"),
    [([], "no K given"), ([0], "K: 0 is not allowed; expected integers >= 1"), ([31], "class 0 has 30 items, fewer than K=31")],
)
def test_bad_k_is_refused_before_any_work(tmp_path, feats, ks, msg):
    with pytest.raises(ValueError, match=msg):
        precompute_from_features(feats, ks, tmp_path / "p.pt", progress=False)
    assert not partial_dir(tmp_path / "p.pt").exists()


def test_synthetic_source_is_deterministic_and_class_by_class():
    f, sizes = synthetic_features(3, 50, 8, seed=1)
    assert sizes == [50, 50, 50] and f(2).shape == (50, 8) and torch.equal(f(1), f(1)) and not torch.equal(f(0), f(1))
    with pytest.raises(ValueError, match="synthetic dim: 0 is not allowed"):
        synthetic_features(3, 50, 0)


# ---------------------------------------------------------------------------------- validation
def test_load_validates_against_the_data_with_expected_vs_found(tmp_path, feats):
    out = tmp_path / "picks.pt"
    labels = torch.cat([torch.full((x.shape[0],), c) for c, x in enumerate(feats)])
    precompute_from_features(feats, [3], out, labels=labels, kmeans=KM, progress=False)
    assert load_picks(out, labels=labels, num_items=150, num_classes=4, ks=[3]).ks == (3,)
    with pytest.raises(PicksFileError, match=r"computed for a dataset of 150 items; found 149 here"):
        load_picks(out, num_items=149)
    with pytest.raises(PicksFileError, match=r"computed for 4 classes; found 10 here"):
        load_picks(out, num_classes=10)
    with pytest.raises(PicksFileError, match=r"K=7 is not in picks file .*; available K: 3"):
        load_picks(out, ks=[7])
    shuffled = labels[torch.randperm(150, generator=torch.Generator().manual_seed(0))]
    with pytest.raises(PicksFileError, match=r"same sizes, different label order"):
        load_picks(out, labels=shuffled)
    with pytest.raises(PicksFileError, match=r"class 0: 29 items instead of 30"):
        load_picks(out, labels=torch.cat([labels[1:], torch.tensor([3])]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_picks(tmp_path / "nope.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(PicksFileError, match="is not a dream-plugin picks file"):
        load_picks(tmp_path / "other.pt")
    data = torch.load(out, weights_only=True)
    data["version"] = 99
    torch.save(data, tmp_path / "future.pt")
    with pytest.raises(PicksFileError, match="has format version 99; this dream-plugin reads version 1"):
        load_picks(tmp_path / "future.pt")


# ------------------------------------------------------------------------------------ strategy
def test_precomputed_strategy_answers_from_the_file(tmp_path, feats):
    out = tmp_path / "picks.pt"
    precompute_from_features(feats, [3, 5], out, kmeans=KM, progress=False)
    f = load_picks(out)
    sel = selector(out)
    load = lambda pos: torch.zeros(len(pos), 1, 2, 2)  # noqa: E731 - never embedded
    for c in range(4):
        pool = torch.arange(100 * c, 100 * c + feats[c].shape[0])
        assert torch.equal(sel.select(c, 5, pool, load), f.positions(c, 5))
        assert torch.equal(sel.select(c, 3, pool, load, kind="init"), f.positions(c, 3))
    rec = sel.records[-1]
    assert rec.strategy == "precomputed" and rec.answered_by == "strategy:precomputed" and rec.embed_seconds == 0
    with pytest.raises(PicksFileError, match=r"K=4 is not in picks file .*; available K: 3, 5"):
        sel.select(0, 4, torch.arange(30), load)
    with pytest.raises(PicksFileError, match=r"computed for a pool of 35 items in class 1; found 34 here"):
        sel.select(1, 3, torch.arange(34), load)
    with pytest.raises(PicksFileError, match=r"class 4 is not in picks file .*: it covers classes 0..3"):
        sel.select(4, 3, torch.arange(40), load)


def test_precomputed_fallback_and_option_errors(tmp_path, feats):
    out = tmp_path / "picks.pt"
    precompute_from_features(feats, [3], out, kmeans=KM, progress=False)
    sel = selector(out, on_missing="random")
    pos = sel.select(0, 4, torch.arange(30), lambda p: torch.zeros(len(p), 1, 2, 2))
    assert pos.numel() == 4 and pos.unique().numel() == 4
    with pytest.raises(ConfigError, match="options.precomputed.path: missing"):
        Selector(Settings(strategy="precomputed"), plugin_manager=build_plugin_manager(PluginSettings(autoload=False))).select(
            0, 3, torch.arange(30), lambda p: torch.zeros(len(p), 1, 2, 2))
    with pytest.raises(ConfigError, match=r"options.precomputed.on_missing: 'skip' is not allowed; expected one of 'error', 'random', 'dream'"):
        selector(out, on_missing="skip")
    with pytest.raises(PicksFileError, match="computed for a dataset of 150 items; found 1000 here"):
        selector(out, num_items=1000).select(0, 3, torch.arange(30), lambda p: torch.zeros(len(p), 1, 2, 2))


# ----------------------------------------------------------------------------------------- CLI
def test_cli_precompute_embeds_the_dataset_with_the_checkpoint(tmp_path, digits, capsys):
    torch.manual_seed(3)
    net = ConvNet(digits.channels, digits.num_classes, digits.image_size, width=8, depth=1)
    ckpt = tmp_path / "net.pt"
    torch.save(net.state_dict(), ckpt)
    out = tmp_path / "picks.pt"
    args = ["precompute", "--dataset", "digits", "--checkpoint", str(ckpt), "--width", "8", "--depth", "1",
            "--k", "5", "--k", "2", "--max-iter", "30", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "picks for K=2,5 of 10 classes" in text and "peak RSS" in text
    f = load_picks(out, labels=digits.train_labels, num_classes=10, ks=[2, 5])
    assert f.meta["source"]["checkpoint"] == str(ckpt) and f.feature_dim == 8 * 4 * 4
    # the same as the API with that network: positions within class_indices() order
    ref = tmp_path / "ref.pt"
    precompute_dataset(digits, net.eval(), [2, 5], ref, kmeans=KM, progress=False)
    assert torch.equal(f.picks[5], load_picks(ref).picks[5])
    # a checkpoint of another shape is refused naming what was expected
    assert main(args[:-3] + ["--width", "16", "--out", str(tmp_path / "x.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not fit ConvNet(width=16, depth=1, norm=instancenorm)" in err


def test_cli_precompute_with_a_factory_and_synthetic(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_nets.py").write_text(
        "import torch\n"
        "def make(channels, num_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * 64, 6), torch.nn.Linear(6, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "f.pt"
    assert main(["precompute", "--dataset", "digits", "--factory", "my_nets:make", "--k", "3", "--out", str(out),
                 "--no-progress", "--max-iter", "20"]) == 0
    assert load_picks(out).feature_dim == 6  # the input of the last Linear
    assert main(["precompute", "--dataset", "digits", "--factory", "my_nets:nope", "--k", "3", "--out", str(out)]) == 2
    assert "module 'my_nets' has no callable 'nope'" in capsys.readouterr().err
    out2 = tmp_path / "s.pt"
    assert main(["precompute", "--synthetic", "3,40,5", "--k", "4", "--out", str(out2), "--no-progress"]) == 0
    assert load_picks(out2).fingerprint.pool_sizes == (40, 40, 40)
    with pytest.raises(SystemExit):
        main(["precompute", "--synthetic", "3,40", "--k", "4", "--out", str(out2)])
    assert "--synthetic: '3,40' is not allowed; expected N_CLASSES,PER_CLASS,DIM" in capsys.readouterr().err
    sys.modules.pop("my_nets", None)


def test_cli_refuses_bad_kmeans_settings_before_any_work(tmp_path, capsys):
    out = tmp_path / "bad.pt"
    assert main(["precompute", "--synthetic", "2,20,8", "--k", "3", "--max-iter", "0", "--out", str(out)]) == 2
    assert "max_iter: 0 is not allowed; expected an integer >= 1" in capsys.readouterr().err
    assert not out.exists()
