"""Shipped observers: the records file round trip, its switches, the logging summary, `records` CLI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from dream_plugin.adapters import wrap_get_images
from dream_plugin.cli import main
from dream_plugin.core.config import PluginSettings, load_settings, parse_settings
from dream_plugin.core.manager import build_plugin_manager
from dream_plugin.hosts.observers import LOGGER_NAME, RecordsWriter, attach, read_records
from dream_plugin.cli.records import summarise
from dream_plugin.core.requests import SelectionRecord
from dream_plugin.core.selector import Selector

from fakehosts.gradient_matching import run_dc_like


def record(**kw):
    base = dict(strategy="dream", kind="match", class_id=0, n=4, pool_size=20, step=0, seconds=0.5,
                reclustered=True, kmeans_iterations=7, inertia=1.25, duplicates_resolved=1, embed_seconds=0.1,
                cluster_seconds=0.3, embed_source="live network", answered_by="strategy:dream", note="")
    base.update(kw)
    return SelectionRecord(**base)


def test_records_file_round_trip(tmp_path):
    path = tmp_path / "sub" / "run.jsonl"
    writer = RecordsWriter(path)
    written = [record(), record(kind="init", inertia=None, kmeans_iterations=None, note="a note"),
               record(strategy="random", reclustered=False, answered_by="host sampler", seconds=1e-4)]
    for r in written:
        writer.selection_done(record=r)
    writer.close()
    assert read_records(path) == written
    first, *lines = path.read_text().splitlines()
    assert set(json.loads(first)["header"]) == {"started", "host", "command", "pid", "rank"}
    assert all(json.loads(line)["kind"] for line in lines)


def test_read_records_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record().as_dict()) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON line"):
        read_records(path)
    path.write_text(json.dumps({"kind": "match"}) + "\n")
    with pytest.raises(ValueError, match=r":1: not a SelectionRecord, missing strategy"):
        read_records(path)


@pytest.mark.parametrize("switch", ["env", "config"])
def test_a_host_run_writes_every_record_of_both_arms(tmp_path, monkeypatch, switch):
    path = tmp_path / "records-{rank}.jsonl"
    monkeypatch.setenv("RANK", "3")
    adapters = []
    for arm in ("random", "dream"):
        if switch == "env":
            monkeypatch.setenv("DREAM_RECORDS", str(path))
            settings = load_settings(overrides={"strategy": arm, "options": {"dream": {"kmeans": {"max_iter": 5}}}})
        else:
            settings = parse_settings({"strategy": arm, "observe": {"records": str(path)},
                                       "options": {"dream": {"kmeans": {"max_iter": 5}}}})
        pm = build_plugin_manager(PluginSettings(autoload=False))

        def line(*, get_images, images_all, indices_class, live_net, factory, ipc, bn_n, batch_real):
            a = wrap_get_images(get_images, images_all, indices_class, net=live_net, net_factory=factory,
                                init_n=ipc, bn_n=bn_n, match_n=batch_real, selector=Selector(settings, plugin_manager=pm))
            adapters.append(a)
            return a

        run_dc_like(line, num_exp=2, bn=True)  # two experiments: two selectors on one manager, one writer
    file = tmp_path / "records-3.jsonl"
    got = read_records(file)
    assert got == [r for a in adapters for r in a.records]
    assert {(r.strategy, r.answered_by) for r in got} >= {("random", "host sampler"), ("dream", "strategy:dream")}
    assert {r.kind for r in got} == {"init", "bn", "match"}


def test_attach_is_idempotent_and_off_by_default(tmp_path):
    pm = build_plugin_manager(PluginSettings(autoload=False))
    sel = Selector(parse_settings({}), plugin_manager=pm)
    assert attach(sel) == ["dream_plugin.hosts.observers.logging"]
    sel2 = Selector(parse_settings({"observe": {"records": str(tmp_path / "r.jsonl")}}), plugin_manager=pm)
    names = attach(sel2)
    assert attach(sel2) == names and len(pm.get_plugins()) == len(set(pm.get_plugins()))
    writers = [p for p in pm.get_plugins() if isinstance(p, RecordsWriter)]
    assert len(writers) == 1


def test_missing_optional_package_warns_and_skips(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *a, **kw):
        if name == "wandb":
            raise ImportError("no wandb")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    pm = build_plugin_manager(PluginSettings(autoload=False))
    sel = Selector(parse_settings({"observe": {"wandb": True}}), plugin_manager=pm)
    with pytest.warns(RuntimeWarning, match="wandb package is not installed"):
        names = attach(sel)
    assert "dream_plugin.hosts.observers.wandb" not in names


def test_logging_summary_logs_each_reselection_at_info(caplog):
    pm = build_plugin_manager(PluginSettings(autoload=False))
    sel = Selector(parse_settings({"strategy": "dream", "options": {"dream": {"interval": 2}}}), plugin_manager=pm)
    attach(sel)
    feats = torch.randn(30, 4)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        for _ in range(4):
            sel.select(0, 3, torch.arange(30), lambda p: feats[p], embed=lambda x: x)
    infos = [r for r in caplog.records if r.name == LOGGER_NAME and r.levelno == logging.INFO]
    assert len(infos) == sum(r.reclustered for r in sel.records) == 2
    assert "match class 0: 3 of 30" in infos[0].getMessage() and "re-clustered" in infos[0].getMessage()


def test_records_summary_on_a_known_file(tmp_path, capsys):
    path = tmp_path / "known.jsonl"
    rows = [record(seconds=3.0), record(seconds=1.0, reclustered=False, duplicates_resolved=0, class_id=1),
            record(kind="init", seconds=4.0, duplicates_resolved=2),
            record(strategy="random", answered_by="host sampler", seconds=2.0, reclustered=False, duplicates_resolved=0)]
    path.write_text("".join(json.dumps(r.as_dict()) + "\n" for r in rows))
    summary = summarise(read_records(path))
    assert [(s["kind"], s["strategy"], s["calls"], s["classes"], s["reclusterings"], s["duplicates_resolved"])
            for s in summary] == [("match", "dream", 2, 2, 1, 1), ("init", "dream", 1, 1, 1, 2),
                                  ("match", "random", 1, 1, 0, 0)]
    assert np.allclose([s["time_share"] for s in summary], [0.4, 0.4, 0.2])
    assert main(["records", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 records" in out and "40.0%" in out and "host sampler" in out
    assert main(["records", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[2]["answered_by"] == ["host sampler"]
    assert main(["records", str(tmp_path / "absent.jsonl")]) == 2


def test_observe_environment_overrides_are_validated():
    from dream_plugin.core.config import ConfigError

    assert load_settings(environ={"DREAM_LOG": "INFO"}).observe.log == "info"
    with pytest.raises(ConfigError, match="DREAM_LOG: 'loud' is not allowed; expected off, info or debug"):
        load_settings(environ={"DREAM_LOG": "loud"})


def test_tensorboard_and_wandb_observers_log_scalars(monkeypatch, tmp_path):
    import sys
    import types

    scalars, logged = [], []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

    tb = types.ModuleType("torch.utils.tensorboard")
    tb.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", tb)
    wandb = types.ModuleType("wandb")
    wandb.run = object()
    wandb.log = lambda data, commit=False: logged.append(data)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    pm = build_plugin_manager(PluginSettings(autoload=False))
    sel = Selector(parse_settings({"observe": {"tensorboard": str(tmp_path / "tb"), "wandb": True}}), plugin_manager=pm)
    names = attach(sel)
    assert any(n.startswith("dream_plugin.hosts.observers.tensorboard:") for n in names)
    assert "dream_plugin.hosts.observers.wandb" in names
    sel.record_host_call("match", 0, 4, 0.25)
    feats = torch.randn(12, 3)
    sel.select(0, 2, torch.arange(12), lambda p: feats[p], embed=lambda x: x)
    assert ("dream/match/dream/seconds", 0.25, 0) in scalars
    assert any(t == "dream/match/dream/inertia" for t, _, _ in scalars)
    assert logged[0] == {"dream/match/dream/seconds": 0.25, "dream/match/dream/reclustered": 0}
    wandb.run = None  # no active run: nothing is logged
    sel.record_host_call("match", 0, 4, 0.5)
    assert len(logged) == 2
