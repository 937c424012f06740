"""`dream-plugin integrate` beyond the five named hosts, and never silent.

The generic family recipe on fake DC-family checkouts (tests/fakehosts/checkouts/family*, written
from the contract in docs/hosts/family.md): every kind of call site, an unclassifiable one, the
network found by name or given with --net / --net-factory, and the integrated files running in
both arms. Then the named recipes' refusals: a hand-changed named file, a hand-changed replaced
region, a hand-made adapter, and a checkout whose second file cannot be written.
"""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from dream_plugin.cli import main
from dream_plugin.hosts.integrate import patch
from dream_plugin.hosts.integrate.command import run
from dream_plugin.hosts.integrate.discover import discover
from dream_plugin.hosts.integrate.family import FamilyError, analyse
from dream_plugin.hosts.integrate.recipes import BEGIN, END

from fakehosts.data import class_index_lists, clustered_images
from fakehosts.nets import host_constructor
from test_integrate import arm, load  # noqa: F401 - the arm fixture, shared

TRAJ_FACTORY = "get_network(args.model, channel, num_classes, im_size, dist=False).to(args.device)"



def sites(path: Path, **kw) -> list[tuple[int, str, str | None]]:
    a = analyse(path.read_text(), path.name, **kw)
    return [(s.line, s.text, s.kind) for s in a.sites]


# -- the generic recipe ------------------------------------------------------------------------------
def test_each_kind_of_call_site_is_classified_by_its_size(checkout):
    root = checkout("family")
    got = sites(root / "match_loop.py")
    assert got == [
        (20, "get_images(c, args.ipc)", "init"),
        (26, "get_images(c, BNSizePC)", "bn"),
        (28, "get_images(c, args.batch_real)", "match"),
        (30, "get_images(c=None, n=args.trained_bs)", "host_sampler"),
    ]
    assert sites(checkout("family_traj") / "distill_traj.py", factory="f()") == [
        (18, "get_images(c, args.ipc)", "init"),
        (23, "get_images(c, len(indices_class[c]))", "whole"),
    ]


def test_the_change_names_the_files_own_tensors_network_and_sizes(checkout):
    root = checkout("family")
    (t,) = [t for t in discover(root)[0] if t.path.name == "match_loop.py"]
    new = patch.plan_family(t.path, t.rel, t.text, t.family).new
    lines = new.splitlines()
    ret = next(i for i, line in enumerate(lines) if "return images_all[[pool[i] for i in order[:n]]]" in line)
    assert lines[ret + 1:ret + 10] == [
        f"        {BEGIN} (family; see docs/hosts/family.md)",
        "        from dream_plugin.adapters import wrap_get_images",
        "        get_images = wrap_get_images(",
        "            get_images, images_all, indices_class,",
        "            net=lambda: net,  # the live network, looked up at every call",
        "            net_factory=lambda: get_network(args.model, channel, num_classes, im_size).to(args.device),",
        "            init_n=args.ipc, bn_n=16, match_n=args.batch_real,",
        "        )",
        f"        {END}",
    ]
    for marked in ("get_images.init(c, args.ipc)", "get_images.bn(c, BNSizePC)", "get_images.match(c, args.batch_real)",
                   "get_images.host_sampler(c=None, n=args.trained_bs)"):
        assert marked in new
    compile(new, "match_loop.py", "exec")


def test_diff_apply_idempotent_check_on_a_family_checkout(checkout, capsys):
    root = checkout("family")
    before = {p: p.read_bytes() for p in root.rglob("*.py")}
    assert main(["integrate", str(root), "--check"]) == 1
    assert "match_loop.py: family: not integrated" in capsys.readouterr().out
    assert main(["integrate", str(root)]) == 0
    assert {p: p.read_bytes() for p in root.rglob("*.py")} == before
    assert main(["integrate", str(root), "--apply"]) == 0
    out = capsys.readouterr().out
    assert "match_loop.py: family: integrated (backup:" in out and "probe.py: family: integrated (backup:" in out
    after = {p: p.read_bytes() for p in root.rglob("*.py")}
    assert main(["integrate", str(root), "--apply"]) == 0
    assert capsys.readouterr().out.count("already integrated, nothing to do") == 2
    assert {p: p.read_bytes() for p in root.rglob("*.py")} == after
    assert main(["integrate", str(root), "--check"]) == 0


def test_an_unclassifiable_call_site_is_listed_with_file_line_and_what_to_write(checkout, capsys):
    root = checkout("family")
    assert main(["integrate", str(root / "probe.py")]) == 0
    err = capsys.readouterr().err
    assert ("warning: probe.py:12: `get_images(c, 1)` is not classified (its size `1` is none of args.ipc, "
            "args.batch_real, a BN size, len(indices_class[c]))") in err
    assert "write `get_images.init(c, 1)` if it initialises the synthetic set, `get_images.match(c, 1)`" in err
    new = patch.plan_family(*[(t.path, t.rel, t.text, t.family) for t in discover(root / "probe.py")[0]][0]).new
    assert "get_images(c, 1)" in new and "get_images.init(c, args.ipc)" in new  # left for the adapter to infer


def test_a_network_built_in_two_ways_is_not_guessed(checkout, capsys):
    root = checkout("family_traj")
    assert main(["integrate", str(root), "--apply"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the network is built in 2 different ways (line 21: " in err
    assert "line 26: get_network(args.model, channel, num_classes, im_size, dist=False).to(args.device)" in err
    assert "--net-factory EXPR" in err and not list(root.rglob("*.orig"))
    assert main(["integrate", str(root), "--apply", "--net-factory", TRAJ_FACTORY]) == 0
    text = (root / "distill_traj.py").read_text()
    assert f"net_factory=lambda: {TRAJ_FACTORY}," in text and "net=lambda" not in text  # no match: no live network
    assert "get_images.whole(c, len(indices_class[c]))" in text
    assert main(["integrate", str(root), "--check"]) == 0  # once integrated, no option is needed


def test_net_option_names_the_live_network_and_bad_options_are_one_line(checkout, capsys):
    path = checkout("family") / "probe.py"
    a = analyse(path.read_text(), "probe.py", net="model", factory="build()")
    assert (a.net, a.factory) == ("model", "build()")
    with pytest.raises(FamilyError, match="no live network found"):
        analyse("def f(images_all, indices_class):\n    def get_images(c, n):\n"
                "        return images_all[indices_class[c][:n]]\n    get_images(0, args.batch_real)\n", "x.py")
    assert main(["integrate", str(path), "--net", "not a name"]) == 2
    assert "--net: 'not a name' is not a Python name" in capsys.readouterr().err
    assert main(["integrate", str(path), "--net-factory", "get_network(("]) == 2
    assert "--net-factory: 'get_network((' is not a Python expression" in capsys.readouterr().err


def test_list_shows_each_recipe_with_its_files(capsys):
    assert main(["integrate", "--list"]) == 0
    out = capsys.readouterr().out
    for host, file in (("dc-dsa", "main.py"), ("dm", "main_DM.py"), ("mtt", "distill.py"), ("idc", "condense.py"),
                       ("dream", "condense.py"), ("family", "any *.py")):
        assert any(line.split()[:2] == [host, file] or line.startswith(f"{host:8} {file}") for line in out.splitlines())


# -- the integrated family files run -----------------------------------------------------------------
def _match_loop_args(**kw):
    base = dict(num_exp=1, classes=3, ipc=2, Iteration=2, batch_real=8, trained_bs=5, model="ConvNetBN", device="cpu")
    return types.SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("strategy", ["random", "dream"])
def test_integrated_family_file_runs_in_both_arms(checkout, arm, strategy):  # noqa: F811
    root = checkout("family")
    assert run(root, mode="apply") == 0
    rec = arm(strategy)
    images, labels = clustered_images(3, 24)
    module = load(root / "match_loop.py", "fake_family_loop")
    syn, seen = module.main(_match_loop_args(), images, labels, class_index_lists(labels, 3),
                            lambda *a: host_constructor("conv", bn=True))
    assert syn.shape == (6, 1, 8, 8) and seen[-1].shape[0] == 5  # the all-class draw went to the host sampler
    kinds = [(r.kind, r.n) for r in rec.all()]
    assert kinds == [("init", 2)] * 3 + ([("bn", 16)] * 3 + [("match", 8)] * 3) * 2
    want = "host sampler" if strategy == "random" else "strategy:dream"
    assert {r.answered_by for r in rec.all() if r.kind in ("init", "match")} == {want}


@pytest.mark.parametrize("strategy", ["random", "dream"])
def test_integrated_trajectory_file_fetches_whole_classes_unchanged(checkout, arm, strategy):  # noqa: F811
    root = checkout("family_traj")
    assert run(root, mode="apply", net_factory=TRAJ_FACTORY) == 0
    rec = arm(strategy)
    images, labels = clustered_images(3, 24)
    module = load(root / "distill_traj.py", "fake_family_traj")
    args = types.SimpleNamespace(classes=3, ipc=2, pix_init="correct", model="ConvNet", device="cpu")
    module.main(args, images, class_index_lists(labels, 3), lambda *a, **k: host_constructor("conv"))
    records = rec.all()
    assert [(r.kind, r.n, r.answered_by) for r in records] == [("init", 24, "host sampler")] * 3
    assert all("whole class" in r.note for r in records)
    rec.clear()
    module.main(types.SimpleNamespace(**{**vars(args), "pix_init": "real"}), images, class_index_lists(labels, 3),
                lambda *a, **k: host_constructor("conv"))
    want = "host sampler" if strategy == "random" else "strategy:dream"
    assert [(r.kind, r.n, r.answered_by) for r in rec.all()] == [("init", 2, want)] * 3


def test_random_arm_draws_exactly_what_the_unmodified_file_draws(checkout, arm, tmp_path):  # noqa: F811
    original = checkout("family")
    integrated = tmp_path / "integrated"
    shutil.copytree(original, integrated)
    assert run(integrated, mode="apply") == 0
    arm("random")
    images, labels = clustered_images(3, 24)
    outputs = []
    for root, name in ((original, "fake_family_orig"), (integrated, "fake_family_int")):
        np.random.seed(3)
        torch.manual_seed(3)
        syn, seen = load(root / "match_loop.py", name).main(_match_loop_args(), images, labels,
                                                            class_index_lists(labels, 3),
                                                            lambda *a: host_constructor("conv", bn=True))
        outputs.append([syn.numpy().tobytes()] + [s.numpy().tobytes() for s in seen])
    assert outputs[0] == outputs[1]


def test_whole_refuses_a_size_that_is_not_the_class(arm):  # noqa: F811
    from dream_plugin.adapters import wrap_get_images

    arm("random")
    images, labels = clustered_images(3, 24)
    idx = class_index_lists(labels, 3)
    g = wrap_get_images(lambda c, n: images[idx[c][:n]], images, idx)
    assert g.whole(1).shape[0] == 24
    with pytest.raises(ValueError, match=r"get_images.whole\(1, 5\): class 1 has 24 images"):
        g.whole(1, 5)


# -- never silent -------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit,pattern", [
    (("get_images(c, args.batch_real)", "get_images(c, 2 * args.batch_real)"), r"get_images\(c, args\.batch_real\)"),
    (("get_images", "get_imgs"), r"^\s*def get_images\(c, n\):"),
])
def test_a_hand_changed_named_file_is_reported_and_check_fails(checkout, capsys, edit, pattern):
    root = checkout("dc")
    p = root / "main.py"
    p.write_text(p.read_text().replace(*edit))
    before = {q: q.read_bytes() for q in root.rglob("*.py")}
    assert main(["integrate", str(root), "--apply"]) == 2
    err = capsys.readouterr().err
    assert f"refused: main.py: dc-dsa: does not match the dc-dsa contract: no line matches {pattern!r}" in err
    assert "its sampler calls: " in err and ": real = get_im" in err  # the call sites, with their lines
    assert {q: q.read_bytes() for q in root.rglob("*.py")} == before  # main_DM.py was not changed either
    assert main(["integrate", str(root), "--check"]) == 1
    out = capsys.readouterr().out
    assert "main_DM.py: dm: not integrated" in out and "main.py: dc-dsa: does not match" in out
    if edit[0] == "get_images(c, args.batch_real)":  # still a family file: --family integrates it generically
        assert main(["integrate", str(p), "--family", "--apply"]) == 0
        assert "main.py: family: integrated (backup:" in capsys.readouterr().out
        assert "get_images.init(c, args.ipc)" in p.read_text() and "get_images(c, 2 * args.batch_real)" in p.read_text()


def test_a_hand_changed_replaced_region_is_refused_with_the_difference(checkout, capsys):
    root = checkout("dream")
    p = root / "condense.py"
    p.write_text(p.read_text().replace("strategy.query(args.batch_real)", "strategy.query(2 * args.batch_real)"))
    before = p.read_bytes()
    assert main(["integrate", str(root), "--apply"]) == 2
    err = capsys.readouterr().err
    assert "condense.py: lines 28-40, which the dream change replaces, are not the text it knows (" in err
    assert "line 34 is not the known text: query_idxs = strategy.query(2 * args.batch_real)" in err
    assert p.read_bytes() == before and not list(root.rglob("*.orig"))
    p.write_text(p.read_text().replace("                images_all = img_class[c]\n", ""))
    assert main(["integrate", str(root)]) == 2
    assert "1 known line(s) missing after line" in capsys.readouterr().err


DC_BY_HAND = """        from dream_plugin.adapters import wrap_get_images
        get_images = wrap_get_images(
            get_images, images_all, indices_class,
            net=lambda: net,  # the live network, looked up at every call
            net_factory=lambda: get_network(args.model, channel, num_classes, im_size).to(args.device),
            init_n=args.ipc, bn_n=16, match_n=args.batch_real,
        )
"""


@pytest.mark.parametrize("mark_sites", [False, True])
def test_a_hand_made_adapter_is_recognised_and_never_wrapped_twice(checkout, capsys, mark_sites):
    root = checkout("dc")
    p = root / "main.py"
    text = p.read_text().replace("            return images_all[chosen]\n",
                                 "            return images_all[chosen]\n\n" + DC_BY_HAND, 1)
    if mark_sites:  # as the page shows, optionally
        text = text.replace("get_images(c, args.batch_real)", "get_images.match(c, args.batch_real)")
    p.write_text(text)
    assert main(["integrate", str(root), "--apply"]) == 0
    out = capsys.readouterr().out
    assert "main.py: dc-dsa: already integrated by hand (the adapter at line 19), nothing to do" in out
    assert p.read_text() == text
    assert main(["integrate", str(root), "--check"]) == 0
    assert "main.py: dc-dsa: integrated by hand (the adapter at line 19)" in capsys.readouterr().out
    # the same in a family file
    fam = checkout("family") / "probe.py"
    by_hand = fam.read_text().replace("    net = get_network", "    get_images = wrap_get_images(get_images, images_all, "
                                      "indices_class, net=lambda: net)\n    net = get_network")
    fam.write_text(by_hand)
    assert main(["integrate", str(fam), "--apply"]) == 0
    assert "probe.py: family: already integrated by hand (the adapter at line 11)" in capsys.readouterr().out
    assert fam.read_text() == by_hand


def test_a_second_file_that_cannot_be_written_leaves_the_first_as_it_was(checkout, capsys, monkeypatch):
    root = checkout("dc")
    before = {q: q.read_bytes() for q in root.rglob("*")}
    real_write = Path.write_bytes

    def failing(self, data):
        if self.name == "main_DM.py":
            raise PermissionError(13, "Permission denied")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing)
    assert main(["integrate", str(root), "--apply"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "main_DM.py: cannot write (Permission denied); every file written before it is restored" in err
    assert {q: q.read_bytes() for q in root.rglob("*")} == before  # main.py restored, no stray backup


def test_every_file_is_checked_writable_before_the_first_write(checkout, capsys, monkeypatch):
    root = checkout("dc")
    before = {q: q.read_bytes() for q in root.rglob("*")}
    real_probe = patch._probe

    def probe(path):
        if path.name == "main_DM.py":
            raise PermissionError(13, "Permission denied")
        real_probe(path)

    monkeypatch.setattr(patch, "_probe", probe)
    assert main(["integrate", str(root), "--apply"]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("main_DM.py: not writable (Permission denied); nothing written")
    assert {q: q.read_bytes() for q in root.rglob("*")} == before


# -- the host notes --------------------------------------------------------------------------------
MTT_UTILS_NO_MNIST = """def get_dataset(dataset, data_path):
    if dataset == 'CIFAR10':
        channel = 3
    else:
        exit('unknown dataset: %s' % dataset)


def get_daparam(dataset):
    if dataset == 'MNIST':
        return 'crop_scale_rotate'
"""


def test_mtts_missing_mnist_branch_is_warned_whatever_else_mentions_mnist(checkout, capsys, monkeypatch):
    monkeypatch.setattr(patch, "_importable", lambda module: True)
    root = checkout("mtt")
    (root / "utils.py").write_text(MTT_UTILS_NO_MNIST)
    assert main(["integrate", str(root)]) == 0
    assert "warning: utils.py:5: get_dataset has no MNIST branch" in capsys.readouterr().err
    branch = "    elif dataset == 'MNIST':\n        channel = 1\n"
    (root / "utils.py").write_text(MTT_UTILS_NO_MNIST.replace("    else:\n", branch + "    else:\n"))
    assert main(["integrate", str(root)]) == 0
    assert "warning:" not in capsys.readouterr().err  # dealt with: the list is empty


def test_commented_out_lines_and_installed_imports_do_not_count(checkout, capsys, monkeypatch):
    root = checkout("mtt")
    (root / "distill.py").write_text("import wandb\n" + (root / "distill.py").read_text())
    (root / "networks.py").write_text("def f(out):\n    # out = out.view(out.size(0), -1)\n    return out\n")
    monkeypatch.setattr(patch, "_importable", lambda module: False)
    assert main(["integrate", str(root)]) == 0
    err = capsys.readouterr().err
    assert "warning: distill.py:1: imports wandb" in err and "networks.py" not in err
    monkeypatch.setattr(patch, "_importable", lambda module: module == "wandb")
    assert main(["integrate", str(root)]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_a_file_that_is_not_utf8_is_one_line_and_nothing_is_written(checkout, capsys):
    root = checkout("dc")
    p = root / "main_DM.py"
    p.write_bytes(p.read_bytes().replace(b"# A fake DM", b"# \xff A fake DM"))
    before = {q: q.read_bytes() for q in root.rglob("*")}
    assert main(["integrate", str(root), "--apply"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "main_DM.py: not UTF-8 text (byte 2); nothing written" in err
    assert {q: q.read_bytes() for q in root.rglob("*")} == before
