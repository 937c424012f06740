"""Records that scale: flat selector memory, a header per run, a streaming ``records`` command that
survives a crash's truncated last line, one-line errors, and an unwritable records file refused early."""

from __future__ import annotations

import json

import pytest
import torch

from dream_plugin.cli import main
from dream_plugin.core.config import ConfigError, PluginSettings, parse_settings
from dream_plugin.core.manager import build_plugin_manager
from dream_plugin.hosts.observers import RecordsWriter, attach, iter_entries, read_records
from dream_plugin.core.requests import SelectionRecord
from dream_plugin.core.selector import Selector
from dream_plugin.core.totals import RECENT, RecentRecords


def _selector(**data):
    return Selector(parse_settings({"strategy": "random", **data}),
                    plugin_manager=build_plugin_manager(PluginSettings(autoload=False)))


def test_selector_keeps_totals_and_only_recent_records():
    sel = _selector()
    calls = 2 * RECENT + 500
    for i in range(calls):
        sel.record_host_call("match", i % 10, 4, 0.001, pool_size=20)
    assert RECENT <= len(sel.records) <= 2 * RECENT  # benchmarks/records_memory.py measures the RSS
    assert sel.records[-1].step == (calls - 1) // 10  # the latest record is there
    assert sel.totals.calls == calls and sel.totals.by_kind["match"].calls == calls
    assert sel.totals.seconds == pytest.approx(calls * 0.001)


def test_recent_records_drop_the_oldest_in_blocks():
    kept = RecentRecords(keep=3)
    for i in range(7):
        kept.append(i)
    assert kept == [4, 5, 6]  # at 7 > 2 * 3 the oldest are dropped down to 3
    with pytest.raises(ValueError, match="keep must be >= 1"):
        RecentRecords(keep=0)


def _record(**kw):
    base = dict(strategy="random", kind="match", class_id=0, n=4, pool_size=20, step=0, seconds=0.5,
                reclustered=False, kmeans_iterations=None, inertia=None, duplicates_resolved=0, embed_seconds=0.0,
                cluster_seconds=0.0, embed_source="none", answered_by="host sampler", note="")
    return SelectionRecord(**{**base, **kw})


def test_records_reports_run_by_run_and_skips_a_truncated_last_line(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    for strategy in ("random", "dream"):  # two host runs appending to one file
        w = RecordsWriter(path)
        w.selection_done(record=_record(strategy=strategy))
        w.selection_done(record=_record(strategy=strategy, class_id=1))
        w.close()
    with open(path, "a") as fh:  # a crash in the middle of a line
        fh.write(json.dumps(_record().as_dict())[:40])
    assert main(["records", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (f"dream-plugin: warning: {path}:7: skipped a truncated last line (40 characters, "
                            "no newline)\n")
    assert f"{path}: 4 records in 2 run(s)" in captured.out
    assert captured.out.count("\nrun ") == 2 and "; 2 records" in captured.out
    assert main(["records", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["run"], r["strategy"], r["calls"]) for r in rows] == [(1, "random", 2), (2, "dream", 2)]
    with pytest.raises(ValueError, match=r"r.jsonl:7: not a JSON line"):  # the library is strict unless told
        read_records(path)


@pytest.mark.parametrize("content, message", [
    (None, "is a folder; expected a records file (JSON lines)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not a text file"),
    (json.dumps(_record(seconds="slow").as_dict()) + "\n", "field 'seconds' is str 'slow'; expected float"),
    (json.dumps(_record(class_id=True).as_dict()) + "\n", "field 'class_id' is bool True; expected int"),
    ("[1, 2]\n", "expected a JSON object (one SelectionRecord), got list"),
])
def test_records_gives_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "bad"
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert main(["records", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_unwritable_records_file_is_an_error_when_the_adapter_is_built(tmp_path, unwritable_dir):
    from dream_plugin.adapters.get_images import GetImagesAdapter

    images = torch.zeros(8, 1, 2, 2)
    for target, message in ((tmp_path, "is a folder; expected a file path such as"),
                            (f"{unwritable_dir}/sub/r.jsonl", "cannot be written (")):
        sel = _selector(observe={"records": str(target)})
        with pytest.raises(ConfigError, match=r"^observe.records \(DREAM_RECORDS\): '.*' " + message.replace("(", r"\(")):
            GetImagesAdapter(lambda c, n: images[:n], images, [[0, 1, 2, 3], [4, 5, 6, 7]], selector=sel)


def test_header_names_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "2")
    path = tmp_path / "r.jsonl"
    sel = _selector(observe={"records": str(path)})
    attach(sel)
    sel.record_host_call("match", 0, 4, 0.0, pool_size=8)
    (header, _), (_, record) = list(iter_entries(path))
    assert header["rank"] == 2 and header["pid"] > 0 and header["host"] and header["started"].endswith("Z")
    assert record.kind == "match"
