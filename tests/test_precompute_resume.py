"""`dream-plugin precompute` never gets stuck: atomic class files, checksums, corrupt files recomputed,
one-line errors for a corrupt manifest, a garbage checkpoint, a missing CUDA device and an unwritable --out."""

from __future__ import annotations

import json

import pytest
import torch

from dream_plugin.cli import main
from dream_plugin.engine.precompute import KMeansOptions, load_picks, partial_dir, precompute_from_features
from dream_plugin.engine.precompute.resume import MANIFEST, class_file

KM = KMeansOptions(max_iter=20)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def feats():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(20 + 3 * c, 5, generator=g) + 4 * c for c in range(4)]


def interrupted(feats, out, at: int = 2):
    """Run until class ``at`` raises (as a Ctrl-C would), leaving ``<out>.partial/`` behind."""
    def source(c):
        if c == at:
            raise KeyboardInterrupt
        return feats[c]

    with pytest.raises(KeyboardInterrupt):
        precompute_from_features(source, [3], out, pool_sizes=[x.shape[0] for x in feats], kmeans=KM, progress=False)
    return partial_dir(out)


def resume(feats, out, **kw):
    asked = []
    rep = precompute_from_features(lambda c: asked.append(c) or feats[c], [3], out,
                                   pool_sizes=[x.shape[0] for x in feats], kmeans=KM, progress=False, **kw)
    return rep, asked


@pytest.fixture
def reference(tmp_path, feats):
    ref = tmp_path / "ref.pt"
    precompute_from_features(feats, [3], ref, kmeans=KM, progress=False)
    return load_picks(ref)


def test_manifest_records_the_checksum_of_every_finished_class(tmp_path, feats):
    import hashlib

    d = interrupted(feats, tmp_path / "p.pt")
    sums = json.loads((d / MANIFEST).read_text())["checksums"]
    assert sorted(sums) == ["class_000000.pt", "class_000001.pt"]
    for name, digest in sums.items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_class_file_is_named_discarded_and_recomputed(tmp_path, feats, reference, damage):
    out = tmp_path / "p.pt"
    d = interrupted(feats, out)
    f = class_file(d, 1)
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:50])
    elif damage == "flip":
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        f.write_bytes(bytes(raw))
    else:  # a valid torch file with the wrong content (was: KeyError at assembly)
        torch.save({"pool_size": 23, "feature_dim": 5, "picks": {101: torch.zeros(1)}, "inertia": {}, "n_iter": {}}, f)
    rep, asked = resume(feats, out)
    assert asked == [1, 2, 3] and rep.reused == [0]
    assert rep.discarded == [f"{f} (corrupt: its checksum does not match the manifest); recomputed"]
    assert torch.equal(load_picks(out).picks[3], reference.picks[3])


def test_foreign_class_files_are_named_discarded_and_recomputed(tmp_path, feats, reference):
    out = tmp_path / "p.pt"
    d = interrupted(feats, out)
    torch.save({"anything": 1}, class_file(d, 2))  # not written by this job: no checksum in the manifest
    torch.save({"anything": 1}, class_file(d, 9))  # a class this job does not have
    rep, asked = resume(feats, out)
    assert asked == [2, 3]
    assert rep.discarded == [f"{class_file(d, 2)} (foreign or unfinished: not recorded in the manifest); recomputed",
                             f"{class_file(d, 9)} (foreign: this job has classes 0..3); recomputed"]
    assert torch.equal(load_picks(out).picks[3], reference.picks[3])


def test_class_file_write_is_atomic(tmp_path, feats, monkeypatch):
    """A crash inside torch.save leaves neither a class file nor a temporary file, and the rerun is clean."""
    out = tmp_path / "p.pt"
    real_save = torch.save
    calls = []

    def crashing_save(obj, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as fh:
                fh.write(b"half a file")
            raise KeyboardInterrupt
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        precompute_from_features(feats, [3], out, kmeans=KM, progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    d = partial_dir(out)
    assert sorted(p.name for p in d.iterdir()) == ["class_000000.pt", MANIFEST]
    rep, asked = resume(feats, out)
    assert asked == [1, 2, 3] and rep.discarded == []


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_corrupt_manifest_is_reported_as_corrupt_with_the_fix(tmp_path, feats, text):
    out = tmp_path / "p.pt"
    d = interrupted(feats, out)
    (d / MANIFEST).write_text(text)
    with pytest.raises(ValueError, match=r"manifest.json' is corrupt \(.*\); its finished classes cannot be trusted: "
                                         r"pass --restart \(restart=True\) to delete '.*p.pt.partial' and start over"):
        resume(feats, out)
    rep, asked = resume(feats, out, restart=True)
    assert asked == [0, 1, 2, 3]


def test_missing_manifest_is_reported_with_the_fix(tmp_path, feats):
    out = tmp_path / "p.pt"
    d = interrupted(feats, out)
    (d / MANIFEST).unlink()
    with pytest.raises(ValueError, match=r"has no manifest.json, so it is not an interrupted run .* pass --restart"):
        resume(feats, out)


def test_cli_resume_warns_about_each_discarded_file(tmp_path, capsys, monkeypatch):
    import dream_plugin.engine.precompute.job as job

    out = tmp_path / "s.pt"
    args = ["precompute", "--synthetic", "3,30,4", "--k", "3", "--max-iter", "10", "--out", str(out), "--no-progress"]
    with monkeypatch.context() as m:
        m.setattr(job.shutil, "rmtree", lambda p: None)  # keep the finished classes, as an interrupted run would
        assert main(args) == 0
    out.unlink()
    d = partial_dir(out)
    class_file(d, 0).write_bytes(b"garbage")
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err == f"dream-plugin: warning: discarded {class_file(d, 0)} (corrupt: its checksum does not match the manifest); recomputed\n"
    assert load_picks(out).num_classes == 3 and not d.exists()


# ------------------------------------------------------------------------------------ one-line errors
def _one_line_error(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


class NotAStateDict:
    pass


@pytest.mark.parametrize(("content", "reason"), [
    (b"\x00garbage\xff" * 10, "(UnpicklingError: "),
    (b"PK\x03\x04 not really a zip", "(RuntimeError: PytorchStreamReader failed reading zip archive: not a ZIP archive)"),
    (b"", "(EOFError)"),
    ("object", "(UnpicklingError: Unsupported global: GLOBAL test_precompute_resume.NotAStateDict was not an allowed "
               "global by default)"),
])
def test_garbage_checkpoint_is_one_line(tmp_path, capsys, content, reason):
    ckpt = tmp_path / "net.pt"
    if content == "object":
        torch.save({"net": NotAStateDict()}, ckpt)  # a pickled object, which weights_only loading refuses
    else:
        ckpt.write_bytes(content)
    err = _one_line_error(["precompute", "--dataset", "digits", "--checkpoint", str(ckpt), "--k", "2",
                           "--out", str(tmp_path / "p.pt"), "--no-progress"], capsys)
    assert f"--checkpoint: '{ckpt}' is not a checkpoint torch.load can read {reason}" in err
    assert err.endswith("; expected a file saved with torch.save(state_dict)\n")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import dream_plugin.harness.data as data

    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: pytest.fail("data loaded before --device was checked"))
    err = _one_line_error(["precompute", "--dataset", "digits", "--device", "cuda", "--k", "2",
                           "--out", str(tmp_path / "p.pt")], capsys)
    assert "--device: 'cuda' was asked for but CUDA is not available here; use --device cpu" in err


def test_bad_device_name_is_one_line(tmp_path, capsys):
    err = _one_line_error(["precompute", "--dataset", "digits", "--device", "gpu0", "--k", "2",
                           "--out", str(tmp_path / "p.pt")], capsys)
    assert "--device: 'gpu0' is not a torch device" in err


def test_out_that_is_a_folder_or_inside_a_file_is_one_line(tmp_path, capsys):
    err = _one_line_error(["precompute", "--synthetic", "2,10,3", "--k", "2", "--out", str(tmp_path)], capsys)
    assert "is a folder; expected a file path" in err
    (tmp_path / "f").write_text("x")
    err = _one_line_error(["precompute", "--synthetic", "2,10,3", "--k", "2", "--out", str(tmp_path / "f" / "p.pt")],
                          capsys)
    assert "lies inside" in err and "which is a file" in err


def test_unwritable_out_is_one_line(capsys, unwritable_dir):
    target = unwritable_dir
    err = _one_line_error(["precompute", "--synthetic", "2,10,3", "--k", "2", "--out", f"{target}/p.pt"], capsys)
    assert f"--out: '{target}/p.pt' is not writable: the folder '{target}' refuses new files" in err


def test_ctrl_c_says_in_one_line_that_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    import dream_plugin.cli.precompute as pcli

    real = pcli.synthetic_features

    def interrupted_at_class_2(c, per, dim, seed):
        features_of, sizes = real(c, per, dim, seed=seed)

        def features(k):
            if k == 2:
                raise KeyboardInterrupt  # what Ctrl-C raises in the middle of the work
            return features_of(k)

        return features, sizes

    out = tmp_path / "p.pt"
    argv = ["precompute", "--synthetic", "4,30,5", "--k", "3", "--out", str(out), "--no-progress"]
    monkeypatch.setattr(pcli, "synthetic_features", interrupted_at_class_2)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err == (f"dream-plugin: interrupted: the classes finished so far are kept in {str(partial_dir(out))!r}; "
                   "rerun the same command to resume from them\n")
    monkeypatch.setattr(pcli, "synthetic_features", real)
    assert main(argv) == 0
    assert "computed 2 classes, reused 2 from an interrupted run" in capsys.readouterr().out
