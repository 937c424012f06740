"""The same answer to a host bug in every arm: IDC's class loader, MTT, the generic samplers.

The get_images adapter's own tests are in test_adapters_get_images.py; these mirror them for the
other adapters. For each bug kind: a size above the class is accepted in every arm as the host
sampler accepts it (the whole class; the non-host arms warn and note it in the records); a class
id out of range, negative included, and an unusable host answer get one message naming the host
sampler's call in every arm, with a record note for the answer.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dream_plugin.adapters import ClassLoaderAdapter, RepresentativeBatches, make_class_sampler, wrap_mtt_get_images
from dream_plugin.adapters.host_answer import ClassOutOfRangeError, HostSamplerError
from dream_plugin.core.config import PluginSettings, parse_settings
from dream_plugin.core.manager import build_plugin_manager
from dream_plugin.core.selector import Selector

from fakehosts.class_loader import DatasetClassLoader, MemClassLoader, OpaqueClassLoader
from fakehosts.data import class_index_lists, clustered_images
from fakehosts.nets import FeaturesNet, ReturnFeaturesNet, host_constructor

NORM = ([0.5] * 3, [0.25] * 3)
ARMS = ["random", "dream"]


def make_selector(strategy):
    return Selector(parse_settings({"strategy": strategy, "options": {"dream": {"interval": 2, "kmeans": {"max_iter": 20}}}}),
                    plugin_manager=build_plugin_manager(PluginSettings(autoload=False)))


def idc_data():
    return clustered_images(3, 20, channels=3, raw=True)  # 20 images in each of 3 classes


class Spy:
    """Counts the host loader's class_sample calls and passes everything else through."""

    def __init__(self, inner, answer=None):
        self.inner = inner
        self.calls = []
        self.answer = answer  # answer(c, ipc, real) -> what the broken host returns instead

    def class_sample(self, c, ipc=-1):
        self.calls.append((c, ipc))
        real = self.inner.class_sample(c, ipc)
        return self.answer(c, ipc, real) if self.answer is not None else real

    def __getattr__(self, name):
        return getattr(self.inner, name)


def idc_adapter(loader, strategy, **kw):
    kw.setdefault("images_per_class", 2)
    return ClassLoaderAdapter(loader, net=lambda: ReturnFeaturesNet(), net_factory=lambda: ReturnFeaturesNet(),
                              normalize=NORM, selector=make_selector(strategy), **kw)


LOADERS = {
    "mem": (lambda: MemClassLoader(*idc_data(), batch_size=8), {}),
    "dataset": (lambda: DatasetClassLoader(*idc_data(), batch_size=8), {}),
    "opaque": (lambda: OpaqueClassLoader(*idc_data(), batch_size=8), {"class_sizes": [20, 20, 20]}),
}


# -- IDC: a size above the class ----------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ARMS)
@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("method", ["class_sample", "init_sample", "match_sample"])
def test_idc_size_above_the_class_is_the_whole_class_in_every_arm(strategy, loader, method):
    make, extra = LOADERS[loader]
    host = make()
    adapter = idc_adapter(make(), strategy, **extra)
    whole, _ = host.class_sample(1, 25)  # the unmodified host: cls_idx[1][:25] is the whole class
    assert whole.shape[0] == 20
    message = ("class_sample(1, 25): ipc exceeds the 20 images of class 1; the whole class pool is returned, "
               "as the host sampler does")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, labels = getattr(adapter, method)(1, 25)
    assert torch.equal(images, whole)  # the same images in the same order, in every arm
    assert torch.equal(labels, torch.full((20,), 1))
    record = adapter.records[-1]
    assert (record.class_id, record.n, record.pool_size) == (1, 25, 20)
    shown = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    if strategy == "random":  # the host sampler's own answer, unchanged
        assert shown == [] and record.answered_by == "host sampler" and record.note == ""
    else:
        assert shown == [message]
        assert record.answered_by == "adapter (whole class pool)" and record.note == message
        assert record.strategy == "dream"


def test_idc_whole_class_answer_in_the_dream_arm_warns_once_and_needs_no_network():
    adapter = ClassLoaderAdapter(MemClassLoader(*idc_data(), batch_size=8), images_per_class=25,
                                 selector=make_selector("dream"))  # no net, no net_factory
    with pytest.warns(RuntimeWarning, match=r"class_sample\(0, 25\): ipc exceeds the 20 images of class 0"):
        adapter.class_sample(0, 25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert adapter.class_sample(0, 25)[0].shape[0] == 20  # warned once per call; still noted
    assert [r.note.startswith("class_sample(0, 25): ipc exceeds") for r in adapter.records] == [True, True]
    assert [r.kind for r in adapter.records] == ["init", "init"]


def test_idc_random_arm_stays_byte_identical_to_the_unmodified_host():
    calls = [(0, 5), (1, 25), (2, None), (1, 20), (0, None), (2, 30)]  # sizes above the class included

    def draw(loader):
        torch.manual_seed(11)
        out = [loader.class_sample(c) if k is None else loader.class_sample(c, k) for c, k in calls]
        return out, torch.get_rng_state()

    expected, after_host = draw(MemClassLoader(*idc_data(), batch_size=8))
    got, after_adapter = draw(idc_adapter(MemClassLoader(*idc_data(), batch_size=8), "random"))
    for (xa, ya), (xb, yb) in zip(got, expected):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(after_adapter, after_host)  # the host's generator advanced exactly as alone


# -- IDC: a class id out of range -----------------------------------------------------------------------
IDC_CALLS = [
    ("class_sample", (), "class_sample({c})"),
    ("class_sample", (2,), "class_sample({c}, 2)"),
    ("class_sample", (20,), "class_sample({c}, 20)"),  # the whole-class fetch
    ("init_sample", (2,), "class_sample({c}, 2)"),
    ("match_sample", (), "class_sample({c})"),
    ("match_sample", (4,), "class_sample({c}, 4)"),
]


@pytest.mark.parametrize("strategy", ARMS)
@pytest.mark.parametrize("method, args, call", IDC_CALLS)
def test_idc_class_out_of_range_is_one_message_in_every_arm(strategy, method, args, call):
    host = MemClassLoader(*idc_data(), batch_size=8)
    # the unmodified host reads cls_idx[-1], the last class, without a word
    assert torch.equal(host.class_sample(-1, 5)[0], host.class_sample(2, 5)[0])
    spy = Spy(MemClassLoader(*idc_data(), batch_size=8))
    adapter = idc_adapter(spy, strategy)
    for c in (-1, 3, -4):
        with pytest.raises(ClassOutOfRangeError) as info:
            getattr(adapter, method)(c, *args)
        assert isinstance(info.value, IndexError)
        negative = "; a negative id would silently read class 2" if c == -1 else ""
        assert str(info.value) == (f"{call.format(c=c)}: class {c} is out of range; the host sampler has classes "
                                   f"0..2 (cls_idx){negative}")
    assert spy.calls == [] and adapter.records == []  # refused before anything was drawn


@pytest.mark.parametrize("strategy", ARMS)
def test_idc_class_range_comes_from_nclass_or_class_sizes_without_cls_idx(strategy):
    adapter = idc_adapter(OpaqueClassLoader(*idc_data(), batch_size=8), strategy, class_sizes=[20, 20, 20])
    with pytest.raises(IndexError, match=r"^class_sample\(-1, 2\): class -1 is out of range; the host sampler has "
                                         r"classes 0..2 \(class_sizes\); a negative id would silently read class 2$"):
        adapter.class_sample(-1, 2)
    loader = OpaqueClassLoader(*idc_data(), batch_size=8)
    loader.nclass = 3  # IDC's loaders know their number of classes
    adapter = idc_adapter(loader, strategy, class_sizes=lambda c: 20)
    with pytest.raises(IndexError, match=r"^class_sample\(3\): class 3 is out of range; the host sampler has "
                                         r"classes 0..2 \(nclass\)$"):
        adapter.class_sample(3)


@pytest.mark.parametrize("strategy", ARMS)
@pytest.mark.parametrize("method", ["init_sample", "match_sample"])
def test_idc_explicit_size_below_one_is_one_message_in_every_arm(strategy, method):
    spy = Spy(MemClassLoader(*idc_data(), batch_size=8))
    adapter = idc_adapter(spy, strategy)
    with pytest.raises(ValueError) as info:
        getattr(adapter, method)(1, 0)
    assert str(info.value) == (f"{method}(1, 0): n must be >= 1, got 0; for the host's random batch of class 1 "
                               "call match_sample(1) (class_sample(1))")
    assert spy.calls == [] and adapter.records == []


# -- IDC: an unusable host answer -----------------------------------------------------------------------
BROKEN = {
    "short": (lambda c, ipc, real: (real[0][:3], real[1][:3]), "returned 3 images (shape (3, 3, 8, 8)); expected {n}"),
    "none": (lambda c, ipc, real: None, "returned NoneType, not a pair (images, labels)"),
    "bare tensor": (lambda c, ipc, real: real[0], "returned Tensor, not a pair (images, labels)"),
    "triple": (lambda c, ipc, real: (*real, None), "returned tuple of 3, not a pair (images, labels)"),
    "list of images": (lambda c, ipc, real: (list(real[0]), real[1]), "returned images of type list, not a tensor of images"),
}


@pytest.mark.parametrize("strategy", ARMS)
@pytest.mark.parametrize("bug", list(BROKEN))
def test_idc_unusable_host_answer_is_one_message_in_every_arm(strategy, bug):
    answer, problem = BROKEN[bug]
    # an opaque loader: the dream arm too asks the host sampler, for the whole class
    adapter = idc_adapter(Spy(OpaqueClassLoader(*idc_data(), batch_size=8), answer), strategy, class_sizes=[20] * 3)
    expected = f"the host sampler's class_sample(0, 20) {problem.format(n=20)}"
    for call in (lambda: adapter.class_sample(0, 20),  # the whole-class fetch: the host answers in every arm
                 lambda: adapter.class_sample(0, 5) if strategy == "dream" else adapter.class_sample(0, 20)):
        with pytest.raises(HostSamplerError) as info:
            call()
        assert str(info.value) == expected
        assert adapter.records[-1].note.startswith(f"unusable answer: {expected}")
        assert adapter.records[-1].answered_by == "host sampler"


@pytest.mark.parametrize("bug", list(BROKEN))
@pytest.mark.parametrize("args, call, n", [((0, 5), "class_sample(0, 5)", 5), ((0,), "class_sample(0)", 8)])
def test_idc_unusable_answer_to_the_random_arms_own_calls(bug, args, call, n):
    answer, problem = BROKEN[bug]
    spy = Spy(MemClassLoader(*idc_data(), batch_size=8), answer)
    adapter = idc_adapter(spy, "random", images_per_class=5)
    with pytest.raises(HostSamplerError) as info:
        adapter.class_sample(*args)
    assert str(info.value) == f"the host sampler's {call} {problem.format(n=n)}"
    assert str(info.value).count("\n") == 0
    assert adapter.records[-1].note == f"unusable answer: {info.value}"
    assert len(adapter.records) == 1 and len(spy.calls) == 1  # one call, one record


def test_idc_labels_of_the_in_memory_loader_are_not_checked():
    """IDC's ClassMemDataLoader answers batch_size labels whatever the number of images: not a bug."""
    spy = Spy(MemClassLoader(*idc_data(), batch_size=8), lambda c, ipc, real: (real[0], torch.full((8,), c)))
    adapter = idc_adapter(spy, "random")
    images, labels = adapter.class_sample(0, 2)
    assert images.shape[0] == 2 and labels.shape[0] == 8 and adapter.records[-1].note == ""


def test_idc_match_batch_smaller_than_batch_size_is_the_class_size():
    """class_sample(c) answers min(batch_size, class size) images: a class smaller than the batch is usable."""
    adapter = idc_adapter(MemClassLoader(*idc_data(), batch_size=32), "random")
    assert adapter.class_sample(0)[0].shape[0] == 20
    bad = idc_adapter(Spy(MemClassLoader(*idc_data(), batch_size=32), lambda c, ipc, real: (real[0][:19], real[1])),
                      "random")
    with pytest.raises(HostSamplerError, match=r"class_sample\(0\) returned 19 images .*; expected 20 \(the whole "
                                               r"class pool when batch_size exceeds its 20 images\)$"):
        bad.class_sample(0)


# -- MTT: get_images for initialisation, and the expert batches ---------------------------------------
def _mtt_host(images, ic):
    def get_images(c, n):  # MTT's distill.py, unchanged
        return images[np.random.permutation(ic[c])[:n]]

    return get_images


@pytest.mark.parametrize("strategy", ARMS)
def test_mtt_init_gives_the_same_answer_to_a_host_bug_in_every_arm(strategy):
    images, labels = clustered_images(3, 24)
    ic = class_index_lists(labels, 3)
    adapter = wrap_mtt_get_images(_mtt_host(images, ic), images, ic, net_factory=lambda: host_constructor("features"),
                                  selector=make_selector(strategy))
    message = ("get_images(1, 30): n exceeds the 24 images of class 1; the whole class pool is returned, as the "
               "host sampler does")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = adapter(1, 30)
    assert got.shape[0] == 24 and {tuple(x.flatten().tolist()) for x in got} == {tuple(x.flatten().tolist())
                                                                                for x in images[ic[1]]}
    shown = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert shown == ([] if strategy == "random" else [message])
    assert adapter.records[-1].note == ("" if strategy == "random" else message)
    for c in (-1, 3):
        with pytest.raises(IndexError) as info:
            adapter(c, 2)
        assert str(info.value).startswith(f"get_images({c}, 2): class {c} is out of range; the host sampler has "
                                          "classes 0..2 (indices_class)")


def test_mtt_init_unusable_host_answer_is_refused_naming_the_host_sampler():
    images, labels = clustered_images(3, 24)
    ic = class_index_lists(labels, 3)
    adapter = wrap_mtt_get_images(lambda c, n: images[:2], images, ic, selector=make_selector("random"))
    with pytest.raises(HostSamplerError, match=r"^the host sampler's get_images\(0, 3\) returned 2 images "
                                               r"\(shape \(2, 1, 8, 8\)\); expected 3$"):
        adapter(0, 3)
    assert adapter.records[-1].note.startswith("unusable answer: the host sampler's get_images(0, 3)")


class BrokenLoader:
    """A host loader whose second batch is unusable."""

    def __init__(self, loader, bad):
        self.loader, self.bad = loader, bad

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            yield self.bad(batch) if i == 1 else batch


@pytest.mark.parametrize("bad, problem", [
    (lambda b: None, "is NoneType, not (images, labels)"),
    (lambda b: b[0], "is Tensor, not (images, labels)"),
    (lambda b: [b[0]], "is list of 1, not (images, labels)"),
    (lambda b: [b[0].tolist(), b[1]], "has images of type list, not a tensor of images"),
    (lambda b: [b[0][:0], b[1][:0]], "has 0 images (shape (0, 1, 8, 8)); expected at least 1"),
])
def test_mtt_expert_batches_refuse_an_unusable_host_batch_naming_the_host_sampler(bad, problem):
    x, y = clustered_images(3, 20)
    host = BrokenLoader(DataLoader(TensorDataset(x, y), batch_size=12), bad)
    sel = make_selector("random")
    batches = RepresentativeBatches((x, y), 12, net=lambda: FeaturesNet(), selector=sel, host_sampler=host)
    it = iter(batches)
    first = next(it)
    assert torch.equal(first[0], x[:12])  # the good batches pass untouched
    with pytest.raises(HostSamplerError) as info:
        next(it)
    assert str(info.value) == f"the host sampler's batch 1 (iterating it, counting from 0) {problem}"
    assert [r.note for r in sel.records] == [
        "expert-training batch from the host's own loader",
        f"unusable answer: {info.value}; expert-training batch from the host's own loader"]


# -- generic: no host sampler, so every arm is the selector, and answers alike ------------------------
@pytest.mark.parametrize("strategy", ARMS)
def test_class_sampler_answers_a_bad_call_alike_in_every_arm(strategy):
    x, y = clustered_images(3, 20)
    sampler = make_class_sampler(x, y, net=FeaturesNet(), selector=make_selector(strategy))
    with pytest.raises(ValueError) as info:
        sampler(0, 25)
    assert str(info.value) == "n=25 exceeds the 20 images of class 0; ask for at most 20 (selection is without replacement)"
    for c in (-1, 3):
        with pytest.raises(IndexError) as info:
            sampler(c, 2)
        assert str(info.value) == f"class {c} has no images (classes: [0, 1, 2])"
    assert sampler.records == []
