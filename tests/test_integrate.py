"""`dream-plugin integrate` on fake DC/DM/MTT/IDC/DREAM-shaped checkouts (tests/fakehosts/checkouts).

Diff, apply, idempotence, refusing a file that is not what the recipe expects, --check, the
torch-2/CPU notes, and: the integrated fake scripts actually run with the adapter in both arms,
with every call's kind marked at its call site.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from dream_plugin.cli import main
from dream_plugin.hosts.integrate.command import recognise, run
from dream_plugin.hosts.integrate.patch import IntegrateError, plan
from dream_plugin.hosts.integrate.recipes import BEGIN, recipes_for

from fakehosts.class_loader import MemClassLoader
from fakehosts.data import clustered_images
from fakehosts.nets import host_constructor




@pytest.mark.parametrize("name,hosts", [("dc", {"dc-dsa", "dm"}), ("mtt", {"mtt"}), ("idc", {"idc"}),
                                        ("dream", {"dream"})])
def test_recognises_each_host_by_its_sampler_contract(checkout, name, hosts):
    assert {r.host for r, _, _ in recognise(checkout(name))} == hosts


@pytest.mark.parametrize("name", ["dc", "mtt", "idc", "dream"])
def test_diff_apply_idempotent_check(checkout, capsys, name):
    root = checkout(name)
    before = {p: p.read_bytes() for p in root.rglob("*.py")}
    assert main(["integrate", str(root), "--check"]) == 1
    assert "not integrated" in capsys.readouterr().out
    assert main(["integrate", str(root)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("--- a/") and f"+    {BEGIN}" in out.out.replace("+        ", "+    ")
    assert "--apply" in out.err
    assert {p: p.read_bytes() for p in root.rglob("*.py")} == before  # a diff writes nothing
    assert main(["integrate", str(root), "--apply"]) == 0
    assert "integrated (backup:" in capsys.readouterr().out
    changed = {p for p in before if p.read_bytes() != before[p]}
    assert changed
    for p in changed:
        assert p.with_name(p.name + ".dream-plugin.orig").read_bytes() == before[p]
    after = {p: p.read_bytes() for p in root.rglob("*.py")}
    assert main(["integrate", str(root), "--apply"]) == 0
    assert "already integrated, nothing to do" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in root.rglob("*.py")} == after
    assert not list(root.rglob("*.orig.1"))
    assert main(["integrate", str(root), "--check"]) == 0


def test_the_change_goes_after_the_sampler_at_its_indentation_and_marks_call_sites(checkout):
    root = checkout("dc")
    (recipe, path, text), = [h for h in recognise(root) if h[0].host == "dc-dsa"]
    new = plan(recipe, path, text).new
    lines = new.splitlines()
    ret = next(i for i, line in enumerate(lines) if "return images_all[chosen]" in line)
    assert lines[ret + 1] == f"        {BEGIN} (dc-dsa; see docs/hosts/dc-dsa.md)"
    assert "get_images.init(c, args.ipc)" in new and "get_images.bn(c, BNSizePC)" in new
    assert "get_images.match(c, args.batch_real)" in new and "get_images(c, args.batch_real)" not in new
    compile(new, str(path), "exec")


def test_line_endings_are_kept(checkout):
    root = checkout("dc")
    p = root / "main.py"
    p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))
    assert run(root, mode="apply") == 0
    data = p.read_bytes()
    assert data.count(b"\r\n") == data.count(b"\n")
    assert b"get_images.match(c, args.batch_real)" in data


def test_refuses_a_file_that_is_not_what_it_expects_and_writes_nothing(checkout, capsys):
    root = checkout("dc")
    p = root / "main_DM.py"
    p.write_text(p.read_text().replace("parts = [get_images(c, args.batch_real)", "parts = [get_images(c, 2 * args.batch_real)"))
    before = {q: q.read_bytes() for q in root.rglob("*.py")}
    assert main(["integrate", str(root), "--apply"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "main_DM.py" in err and "expected 2 call site(s) 'get_images(c, args.batch_real)', found 1" in err
    assert {q: q.read_bytes() for q in root.rglob("*.py")} == before  # main.py was not changed either
    assert not list(root.rglob("*.orig"))


def test_refuses_a_partly_integrated_file(checkout, capsys):
    root = checkout("dc")
    p = root / "main.py"
    p.write_text(p.read_text().replace("get_images(c, BNSizePC)", "get_images.bn(c, BNSizePC)"))
    (recipe, path, text), = [h for h in recognise(root) if h[0].host == "dc-dsa"]
    with pytest.raises(IntegrateError, match="partly integrated"):
        plan(recipe, path, text)
    assert main(["integrate", str(root), "--check"]) == 1
    assert "dc-dsa: partly integrated" in capsys.readouterr().out


def test_notes_are_warnings_with_file_and_line(checkout, capsys):
    root = checkout("dc")
    assert main(["integrate", str(root)]) == 0
    assert "warning: networks.py:2: torch 2: `.view`" in capsys.readouterr().err


def test_unknown_path_and_unrecognised_checkout(tmp_path, capsys):
    assert main(["integrate", str(tmp_path / "absent")]) == 2
    (tmp_path / "main.py").write_text("print('not a host')\n")
    assert main(["integrate", str(tmp_path)]) == 2
    assert "no supported host file recognised" in capsys.readouterr().err


# -- the integrated fake scripts run -------------------------------------------------------------
def load(path: Path, name: str, extra: dict | None = None) -> types.ModuleType:
    for mod_name, mod in (extra or {}).items():
        sys.modules[mod_name] = mod
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Records:
    """The run's records, as the shipped records observer wrote them (DREAM_RECORDS)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.skip = 0

    def all(self):
        from dream_plugin.hosts.observers import read_records

        return read_records(self.path)[self.skip:] if self.path.exists() else []

    def clear(self) -> None:
        self.skip += len(self.all())


FAST = "options:\n  dream:\n    interval: 2\n    kmeans:\n      max_iter: 10\n"


@pytest.fixture
def arm(monkeypatch, tmp_path):
    def set_arm(strategy: str) -> None:
        cfg = tmp_path / f"{strategy}.yaml"
        cfg.write_text(f"strategy: {strategy}\n" + FAST)
        monkeypatch.setenv("DREAM_PLUGIN_CONFIG", str(cfg))
        monkeypatch.setenv("DREAM_PLUGIN_DISABLE_AUTOLOAD", "1")
        monkeypatch.setenv("DREAM_RECORDS", str(tmp_path / f"records-{strategy}.jsonl"))
        return Records(tmp_path / f"records-{strategy}.jsonl")

    return set_arm


@pytest.mark.parametrize("strategy", ["random", "dream"])
def test_integrated_dc_runs_a_bn_model_with_batch_real_16_in_both_arms(checkout, arm, strategy):
    root = checkout("dc")
    assert run(root, mode="apply") == 0
    rec = arm(strategy)
    images, labels = clustered_images(3, 24)
    dataset = list(zip(images, labels.tolist()))
    args = types.SimpleNamespace(num_exp=1, classes=3, ipc=2, Iteration=2, batch_real=16, model="ConvNetBN",
                                 device="cpu")
    module = load(root / "main.py", "fake_dc_main")
    module.main(args, dataset, lambda *a: host_constructor("conv", bn=True))
    records = rec.all()
    kinds = [(r.kind, r.n) for r in records]
    assert kinds == [("init", 2)] * 3 + ([("bn", 16)] * 3 + [("match", 16)] * 3) * 2
    want = "host sampler" if strategy == "random" else "strategy:dream"
    assert {r.answered_by for r in records if r.kind == "match"} == {want}
    assert {r.answered_by for r in records if r.kind == "bn"} == {"host sampler"}


@pytest.mark.filterwarnings("ignore:ClassLoaderAdapter. no normalize")  # the official code embeds raw images
@pytest.mark.parametrize("strategy", ["random", "dream"])
def test_integrated_mtt_idc_and_dream_run_in_both_arms(checkout, arm, strategy):
    rec = arm(strategy)
    images, labels = clustered_images(3, 24)
    # MTT: every call is init, with a fresh network from the host's constructor
    root = checkout("mtt")
    assert run(root, mode="apply") == 0
    from fakehosts.data import class_index_lists

    args = types.SimpleNamespace(classes=3, ipc=2, pix_init="real", model="ConvNet", device="cpu")
    load(root / "distill.py", "fake_mtt").main(args, images, class_index_lists(labels, 3),
                                              lambda *a: host_constructor("conv"))
    assert [(r.kind, r.n) for r in rec.all()] == [("init", 2)] * 3
    # IDC: init through synset.init, matching through class_sample(c)
    rec.clear()
    root = checkout("idc")
    assert run(root, mode="apply") == 0

    class Synset:
        def init(self, loader, init_type):
            for c in range(3):
                loader.class_sample(c, 2)

    trainset = types.SimpleNamespace(nclass=3, class_size=lambda c: 24)
    args = types.SimpleNamespace(init="random", niter=2, ipc=2, factor=1, dataset="fake")
    define = lambda a, n: host_constructor("return_features", channels=1)  # noqa: E731
    load(root / "condense.py", "fake_idc").condense(args, trainset, MemClassLoader(images, labels, 8), Synset(), define)
    assert [(r.kind, r.n) for r in rec.all()] == [("init", 2)] * 3 + [("match", 8)] * 6
    # the official DREAM code: its own picker is replaced by the loader's class_sample(c)
    rec.clear()
    root = checkout("dream")
    assert run(root, mode="apply") == 0
    picker = types.ModuleType("picker")
    picker.NEW_Strategy = None  # imported by the host, never called once integrated
    args = types.SimpleNamespace(niter=1, inner_loop=2, interval=1, batch_real=8, ipc=2, factor=1)
    load(root / "condense.py", "fake_dream", {"picker": picker}).condense(
        args, trainset, MemClassLoader(images, labels, 8), None, lambda a, n: host_constructor("conv"))
    records = rec.all()
    matches = [r for r in records if r.kind == "match" and r.note == ""]
    assert len(matches) == 6 and {r.n for r in matches} == {8}
    assert len([r for r in records if "whole class" in r.note]) == 3


def test_recipes_cover_every_documented_host():
    assert {r.host for r in recipes_for()} == {"dc-dsa", "dm", "mtt", "idc", "dream"}
    for r in recipes_for():
        assert (Path(__file__).resolve().parents[1] / r.doc).is_file()


def test_each_host_doc_shows_the_change_integrate_writes():
    """The by-hand change in docs/hosts/*.md is the recipe's block, line for line (no drift)."""
    root = Path(__file__).resolve().parents[1]
    for r in recipes_for():
        text = (root / r.doc).read_text()
        for line in r.block:
            assert line.strip() in text, (r.doc, line)
        for old, new, _ in r.call_sites:
            assert f"`{new}`" in text or new in text, (r.doc, new)
