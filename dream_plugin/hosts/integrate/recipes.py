"""What ``dream-plugin integrate`` changes in each supported host, described as data.

A :class:`Recipe` names one host file, how to recognise it (its sampler contract: DC/DSA/DM/MTT's
nested ``get_images(c, n)``, IDC's and the official DREAM code's real-data loader), where the
adapter block goes, which call sites get their kind marked, and the torch-2 / CPU notes to warn
about (reported with file:line wherever the pattern is still present). The recipes are written
from the hosts' documented contracts (docs/hosts/*.md); no host code is copied here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = ["Note", "Recipe", "RECIPES", "BEGIN", "END", "WRAPPERS", "line_key", "recipes_for"]

BEGIN = "# dream-plugin integrate: begin"
END = "# dream-plugin integrate: end"
WRAPPERS = ("wrap_get_images", "wrap_mtt_get_images", "wrap_class_loader", "GetImagesAdapter", "ClassLoaderAdapter")
"""The adapter entry points: a file assigning its sampler from one of them is integrated already (by hand)."""


@dataclass(frozen=True)
class Note:
    """A host issue to warn about: in ``file`` (relative to the checkout), each line matching ``pattern``."""

    file: str
    pattern: str
    message: str
    unless: str = ""
    """A regex that, found in the file's code (comments aside), means the issue is dealt with (no warning)."""
    module: str = ""
    """For a missing-import note: the module; once it is importable here the note is dealt with."""


@dataclass(frozen=True)
class Recipe:
    host: str
    """Short host name (``dc-dsa``, ``dm``, ``mtt``, ``idc``, ``dream``)."""
    file: str
    """The host file that is changed, relative to the checkout."""
    recognise: tuple[str, ...]
    """Regexes that must all match the file (the sampler contract)."""
    reject: tuple[str, ...]
    """Regexes that must not match (tells IDC from its DREAM fork)."""
    anchor: str
    """Regex of the one line the block goes after (after that def's whole body when ``after_body``)."""
    after_body: bool
    block: tuple[str, ...]
    """The lines inserted (without the anchor's indentation), between BEGIN and END markers."""
    call_sites: tuple[tuple[str, str, int], ...] = ()
    """``(old, new, count)``: exact call-site text replaced, and how often the host has it."""
    replace_region: tuple[str, str, tuple[str, ...]] | None = None
    """``(first line regex, last line regex, new lines)``: a region replaced (official DREAM matching)."""
    region_known: tuple[str, ...] = ()
    """The replaced region's known text, as :func:`line_key` of each non-blank line (no host text is
    stored): the region is replaced only when its lines are exactly these."""
    notes: tuple[Note, ...] = ()
    doc: str = ""
    """The host's page in docs/hosts/."""
    run_hint: str = ""


_DC_NOTES = (
    Note("networks.py", r"out = out\.view\(out\.size\(0\), -1\)",
         "torch 2: `.view` on a non-contiguous (DSA-augmented) batch raises 'view size is not compatible'; "
         "change it to `.reshape(out.size(0), -1)` (DSA and DM crash without it)"),
    Note("utils.py", r"(\w+)\[:\] = \1\[0\](?!\.clone)",
         "torch 2 refuses this self-overlapping write in DiffAugment's Siamese branch ('some elements of the input "
         "tensor and the written-to tensor refer to a single memory location'); write `...[0].clone()` (DSA, DM)"),
)

_GET_IMAGES_DEF = r"^\s*def get_images\(c, n\):"

_MTT_NOTES = (
    Note("distill.py", r"^import wandb", "imports wandb: install it, and run offline with WANDB_MODE=disabled "
         "(WANDB_MODE=offline crashes at the first save: wandb.run.name is None)", module="wandb"),
    Note("utils.py", r"^import kornia", "imports kornia (ZCA whitening): install it, or remove the import when not using --zca",
         module="kornia"),
    Note("distill.py", r"image_syn\.cuda\(\)", "hard-coded CUDA when saving the images: use `.to(args.device)` to run on CPU"),
    Note("buffer.py", r"p\.detach\(\)\.cpu\(\) for p in(?!.*clone)",
         "on CPU `.cpu()` returns the live tensor, so every expert snapshot aliases the current weights: the trajectory "
         "is constant and distill.py's loss is inf; add `.clone()` to the snapshot"),
    Note("utils.py", r"exit\('unknown dataset",
         "get_dataset has no MNIST branch (CIFAR10, Tiny, ImageNet, CIFAR100 only): `--dataset MNIST` exits here",
         unless=r"dataset == ['\"]MNIST['\"]:\s*\n\s*channel\s*="),  # a branch that sets up MNIST, not get_daparam's test
    Note("networks.py", r"out = out\.view\(out\.size\(0\), -1\)",
         "torch 2: `.view` on a non-contiguous (DSA-augmented) batch fails; change it to `.reshape`"),
    Note("utils.py", r"(\w+)\[:\] = \1\[0\](?!\.clone)",
         "torch 2 refuses this self-overlapping write in DiffAugment; write `...[0].clone()`"),
)

_IDC_NOTES = (
    Note("condense.py", r"device='cuda'", "CUDA-only default device: pass or default to the available device to run on CPU"),
    Note("data.py", r"\.cuda\(\)|device='cuda'", "hard-coded CUDA in the class loaders: use the available device to run on CPU"),
    Note("train.py", r"device='cuda'|\.cuda\(\)", "hard-coded CUDA (mean/std tables built at import): use the available device"),
    Note("misc/utils.py", r"np\.int\(", "`np.int` was removed in NumPy 1.24; CutMix (on by default) hits it: use `int(...)`"),
    Note("models/convnet.py", r"\.view\(x\.(size\(0\)|shape\[0\]), -1\)",
         "torch 2: `.view` on a non-contiguous augmented batch fails; change it to `.reshape`"),
    Note("train.py", r"^from efficientnet_pytorch import", "imports efficientnet_pytorch: install it, or guard the import",
         module="efficientnet_pytorch"),
    Note("test.py", r"^from efficientnet_pytorch import", "imports efficientnet_pytorch: install it, or guard the import",
         module="efficientnet_pytorch"),
    Note("data.py", r"warnings\.filterwarnings\(\"ignore\"\)",
         "silences every warning of the run, the adapter's too (e.g. the one about normalize=)"),
)

_DREAM_NOTES = _IDC_NOTES + (
    Note("new_strategy.py", r"device='cuda'", "hard-coded CUDA in the host's own k-means picker (unused once integrated)"),
    Note("new_strategy.py", r"^from fast_pytorch_kmeans import",
         "imported at start-up even when integrated: install dream-plugin's [fast-kmeans] extra (fast-pytorch-kmeans)",
         module="fast_pytorch_kmeans"),
)

RECIPES: tuple[Recipe, ...] = (
    Recipe(
        host="dc-dsa", file="main.py",
        recognise=(_GET_IMAGES_DEF, r"BNSizePC", r"get_images\(c, args\.batch_real\)"),
        reject=(),
        anchor=_GET_IMAGES_DEF, after_body=True,
        block=(
            "from dream_plugin.adapters import wrap_get_images",
            "get_images = wrap_get_images(",
            "    get_images, images_all, indices_class,",
            "    net=lambda: net,  # the live network, looked up at every call",
            "    net_factory=lambda: get_network(args.model, channel, num_classes, im_size).to(args.device),",
            "    init_n=args.ipc, bn_n=16, match_n=args.batch_real,",
            ")",
        ),
        call_sites=(
            ("get_images(c, args.ipc)", "get_images.init(c, args.ipc)", 1),
            ("get_images(c, BNSizePC)", "get_images.bn(c, BNSizePC)", 1),
            ("get_images(c, args.batch_real)", "get_images.match(c, args.batch_real)", 1),
        ),
        notes=_DC_NOTES, doc="docs/hosts/dc-dsa.md",
    ),
    Recipe(
        host="dm", file="main_DM.py",
        recognise=(_GET_IMAGES_DEF, r"get_images\(c, args\.batch_real\)", r"embed"),
        reject=(r"BNSizePC",),
        anchor=_GET_IMAGES_DEF, after_body=True,
        block=(
            "from dream_plugin.adapters import wrap_get_images",
            "get_images = wrap_get_images(",
            "    get_images, images_all, indices_class,",
            "    net=lambda: net,  # the live network, looked up at every call",
            "    net_factory=lambda: get_network(args.model, channel, num_classes, im_size).to(args.device),",
            "    init_n=args.ipc, match_n=args.batch_real,",
            ")",
        ),
        call_sites=(
            ("get_images(c, args.ipc)", "get_images.init(c, args.ipc)", 1),
            ("get_images(c, args.batch_real)", "get_images.match(c, args.batch_real)", 2),
        ),
        notes=_DC_NOTES, doc="docs/hosts/dm.md",
    ),
    Recipe(
        host="mtt", file="distill.py",
        recognise=(_GET_IMAGES_DEF, r"pix_init"),
        reject=(),
        anchor=_GET_IMAGES_DEF, after_body=True,
        block=(
            "from dream_plugin.adapters import wrap_mtt_get_images  # every call initialises (kind init)",
            "get_images = wrap_mtt_get_images(",
            "    get_images, images_all, indices_class,",
            "    net_factory=lambda: get_network(args.model, channel, num_classes, im_size).to(args.device),",
            ")",
        ),
        notes=_MTT_NOTES, doc="docs/hosts/mtt.md",
    ),
    Recipe(
        host="idc", file="condense.py",
        recognise=(r"loader_real\.class_sample\(c\)", r"^\s*nclass = trainset\.nclass\s*$", r"synset\.init\(loader_real"),
        reject=(r"NEW_Strategy",),
        anchor=r"^\s*nclass = trainset\.nclass\s*$", after_body=False,
        block=(
            "from dream_plugin.adapters import wrap_class_loader",
            "loader_real = wrap_class_loader(",
            "    loader_real,",
            "    net=lambda: model,  # the live model, looked up at every call",
            "    net_factory=lambda: define_model(args, nclass).to(device),",
            "    normalize=(MEANS[args.dataset], STDS[args.dataset]),",
            "    images_per_class=(args.ipc, args.ipc * max(1, args.factor) ** 2),",
            ")",
        ),
        notes=_IDC_NOTES, doc="docs/hosts/idc.md",
    ),
    Recipe(
        host="dream", file="condense.py",
        recognise=(r"NEW_Strategy\(", r"^\s*nclass = trainset\.nclass\s*$", r"ot % args\.interval == 0"),
        reject=(),
        anchor=r"^\s*nclass = trainset\.nclass\s*$", after_body=False,
        block=(
            "from dream_plugin.adapters import wrap_class_loader",
            "loader_real = wrap_class_loader(",
            "    loader_real,",
            "    net=lambda: model,  # the live model, looked up at every call",
            "    net_factory=lambda: model,  # initialise with the model the host already built, as the official code does",
            "    images_per_class=(args.ipc, args.ipc * max(1, args.factor) ** 2),",
            ")",
        ),
        replace_region=(
            r"^\s*if ot % args\.interval == 0:\s*$",
            r"^\s*lab = torch\.tensor\(\[np\.ones\(img\.size\(0\)\)\*c\]",
            ("img, lab = loader_real.class_sample(c)  # the configured strategy picks the real batch",),
        ),
        # the 13 lines of upstream 595e3c1 (8 not blank): the interval test, the host's k-means picker, the
        # indexing of the kept class tensor, and the labels rebuilt from c
        region_known=("c24ec26a45f9f411", "7f6ef30dba269643", "2418a60f1d9bc2ca", "9021ffbb12231274",
                      "eab9aa513bd2c898", "6f58654a6f83e1ca", "dbe5bfc4cbcad19d", "c6961a9dd83c5e77"),
        notes=_DREAM_NOTES, doc="docs/hosts/dream-official.md",
    ),
)


def line_key(line: str) -> str:
    """A line's identity regardless of spacing: the first 16 hex digits of sha256 of it without whitespace."""
    return hashlib.sha256(re.sub(r"\s+", "", line).encode("utf-8")).hexdigest()[:16]


def recipes_for(host: str | None = None) -> tuple[Recipe, ...]:
    return tuple(r for r in RECIPES if host is None or r.host == host)

