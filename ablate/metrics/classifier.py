"""The per-dataset classifier CNN: architecture, deterministic training, cache, features.

ablate trains one classifier per dataset, once, and caches it under
``<cache>/classifier/<dataset>-<key>.pt`` with its held-out test accuracy in the
matching ``.json``. The key hashes the dataset, the architecture version and the
training recipe, so changing any of them trains a new one. Training is deterministic
(fixed seed, fixed batch order, fixed augmentation draws) and always uses
:data:`TRAIN_THREADS` threads, so the caller's thread setting does not change the weights.
Across CPU kinds they differ (the kernels sum in another order), so the key alone does
not say which weights scored a run: :func:`weights_fingerprint` does, and every run's
provenance records it (``classifier_weights``); the report says when one table mixes
classifiers. An experiment pins the weights that score its runs in its results
directory (``results/<experiment>/classifier/``, the cache's two files): inside
:func:`pinned_in` that folder is read before the cache, so a re-benchmark on another
machine scores its new runs with the same weights as the committed ones (:func:`pin`).

The network sees images in [0, 1] (the range of :func:`ablate.training.models.generate` and of
``data.scale(..., "unit")``) and normalises internally, so generated and real images
always reach it in the range it was trained on.

Derived datasets (Stacked MNIST) use their base dataset's 1-channel classifier on each
channel; see :func:`classifier_features`, which adds that classifier's accuracy on the
stacked test images (:mod:`ablate.metrics.stacked`) to its provenance.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ablate.artefacts import write_json
from ablate.data import base_dataset, dataset_spec, is_stacked, load, scale
from ablate.environment import threads_for
from ablate.errors import ConfigError
from ablate.metrics.cache import cache_dir, key_hash, load_tensors, locked, save_tensors
from ablate.metrics.features import FeatureNet
from ablate.metrics.stacked import stacked_accuracy

ARCH_VERSION = "cnn-v1"  # bump when ClassifierNet changes: invalidates cached weights
# The classifier always trains with this many torch threads, whatever the caller's setting
# (--threads, the core count): oneDNN splits its sums by thread count, so on one CPU kind
# 1 and 2 threads train different weights (test accuracy 0.9282 vs 0.9299 on the AMD EPYC),
# and the FIDs they give a run differ by ~2.4% (docs/statistics.md). Two, because that is
# what `make ablation` used on the 2-core machines this project runs on.
TRAIN_THREADS = 2
FEATURE_DIM = 128  # penultimate width: the feature space of classifier FID/KID/PRDC


@dataclass(frozen=True)
class ClassifierRecipe:
    """How a classifier is trained (hashed into its cache key)."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 2e-3  # peak of a one-cycle schedule; AdamW
    weight_decay: float = 5e-4
    shift: int = 0  # random translation of up to +-shift pixels (augmentation)
    flip: bool = False  # random horizontal flips (natural images only)
    width: int = 32  # channels of the first stage; doubled per stage
    convs_per_stage: int = 1  # 2 for CIFAR-10
    dropout: float = 0.3
    seed: int = 0


# Reasons for each recipe: enough epochs to pass the accuracy target on 2 CPU cores in
# a few minutes; augmentation where the training set is small (mnist-5k) or natural.
RECIPES: dict[str, ClassifierRecipe] = {
    "mnist": ClassifierRecipe(epochs=4, shift=1),  # target >= 99.0%
    "fashion-mnist": ClassifierRecipe(epochs=8, shift=1),  # target >= 90%
    "mnist-5k": ClassifierRecipe(epochs=40, shift=2),  # 3.8k train images; target >= 96%
    "cifar10": ClassifierRecipe(epochs=30, width=64, convs_per_stage=2, shift=3, flip=True,
                                dropout=0.4),  # target >= 80% (needs a GPU in practice)
    "fake": ClassifierRecipe(epochs=2),  # synthetic test data
}
TARGETS = {"mnist": 0.99, "fashion-mnist": 0.90, "mnist-5k": 0.96, "cifar10": 0.80}


def recipe_for(dataset: str) -> ClassifierRecipe:
    return RECIPES.get(dataset, ClassifierRecipe())


class ClassifierNet(nn.Module):
    """Conv stages (conv-BN-ReLU x k, max-pool) -> 128-d features -> class logits."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int,
                 recipe: ClassifierRecipe = ClassifierRecipe()) -> None:
        super().__init__()
        channels, side, _ = shape
        self.in_channels, self.side = channels, side
        stages = 2 if side <= 28 else 3  # 28 -> 14 -> 7; 32 -> 16 -> 8 -> 4
        layers: list[nn.Module] = []
        cin = channels
        for s in range(stages):
            cout = recipe.width * 2 ** s
            for _ in range(recipe.convs_per_stage):
                layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                           nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        out_side = side // 2 ** stages
        layers += [nn.Flatten(), nn.Linear(cin * out_side * out_side, FEATURE_DIM, bias=False),
                   nn.BatchNorm1d(FEATURE_DIM), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(recipe.dropout), nn.Linear(FEATURE_DIM, num_classes))

    def features(self, x01: torch.Tensor) -> torch.Tensor:
        return self.body(x01 * 2.0 - 1.0)  # [0, 1] -> [-1, 1] inside the net

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x01))


def _augment(x: torch.Tensor, recipe: ClassifierRecipe, gen: torch.Generator) -> torch.Tensor:
    """Random integer translations (zero fill) and flips, drawn from ``gen``."""
    n, _, h, w = x.shape
    if recipe.flip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if recipe.shift:
        s = recipe.shift
        dx, dy = (torch.randint(-s, s + 1, (2, n), generator=gen).float())
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2], theta[:, 1, 2] = -2 * dx / w, -2 * dy / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x


@torch.inference_mode()
def accuracy(net: nn.Module, images01: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
    was = net.training
    net.eval()
    correct = sum(int((net(images01[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
                  for i in range(0, len(labels), batch))
    net.train(was)
    return correct / len(labels)


def train_classifier(dataset: str, recipe: ClassifierRecipe | None = None,
                     log=None) -> tuple[ClassifierNet, dict]:
    """Train the classifier of ``dataset`` on its ``train`` split; measure on ``test``."""

    recipe = recipe or recipe_for(dataset)
    with threads_for(TRAIN_THREADS):  # the same weights whatever the caller's threads
        return _train(dataset, recipe, log)


def _train(dataset: str, recipe: ClassifierRecipe, log) -> tuple[ClassifierNet, dict]:
    train, test = load(dataset, "train"), load(dataset, "test")
    torch.manual_seed(recipe.seed)
    net = ClassifierNet(train.shape, train.num_classes, recipe)
    x, y = scale(train.images, "unit"), train.labels
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(y) / recipe.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(recipe.seed)
    t0 = time.perf_counter()
    net.train()
    for epoch in range(recipe.epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), recipe.batch_size):
            idx = perm[i:i + recipe.batch_size]
            xb = _augment(x[idx], recipe, gen)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if log:
            log(f"classifier {dataset}: epoch {epoch + 1}/{recipe.epochs} loss {loss.item():.4f}")
    train_time = time.perf_counter() - t0
    net.eval()
    acc = accuracy(net, scale(test.images, "unit"), test.labels)
    info = {"dataset": dataset, "arch": ARCH_VERSION, "recipe": dataclasses.asdict(recipe),
            "test_accuracy": acc, "n_train": len(y), "n_test": len(test),
            "train_source": train.source, "train_time_s": round(train_time, 2),
            "target_accuracy": TARGETS.get(dataset), "torch_threads": torch.get_num_threads()}
    return net, info


def classifier_key(dataset: str, recipe: ClassifierRecipe | None = None) -> str:
    recipe = recipe or recipe_for(dataset)
    return f"{dataset}-{key_hash({'dataset': dataset, 'arch': ARCH_VERSION, 'recipe': dataclasses.asdict(recipe)})}"


def weights_fingerprint(net: nn.Module) -> str:
    """sha256 (first 16 hex digits) of ``net``'s state_dict, names and bytes in order:
    which trained weights these are (two machines train different ones from one key)."""
    h = hashlib.sha256()
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


_MEMO: dict[tuple[str, str], tuple[ClassifierNet, dict]] = {}
_PINNED: list[Path | None] = []  # pinned_in's folders, innermost last


@contextlib.contextmanager
def pinned_in(folder: Path | str | None) -> Iterator[None]:
    """Within the block, :func:`load_classifier` reads a classifier pinned in ``folder``
    (an experiment's ``classifier/``) before the cache; ``None``: the cache only."""
    _PINNED.append(None if folder is None else Path(folder))
    try:
        yield
    finally:
        _PINNED.pop()


def pinned_file(folder: Path, dataset: str) -> Path:
    """Where ``folder`` pins ``dataset``'s classifier weights (``<key>.pt``; info beside it)."""
    return Path(folder) / f"{classifier_key(dataset)}.pt"


def load_classifier(dataset: str, train_if_missing: bool = True, log=None) -> tuple[ClassifierNet, dict]:
    """The classifier of ``dataset`` and its info: the one pinned in :func:`pinned_in`'s
    folder if it holds one, else the cache's (trained here on first use)."""

    key = classifier_key(dataset)
    pin = _PINNED[-1] if _PINNED else None
    if pin is not None and pinned_file(pin, dataset).exists():
        return _load_pinned(pin, dataset, key)
    folder = cache_dir() / "classifier"
    memo_key = (str(folder), key)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    weights, meta = folder / f"{key}.pt", folder / f"{key}.json"
    with locked(weights):
        if weights.exists() and meta.exists():
            info = json.loads(meta.read_text())
            spec = dataset_spec(dataset)
            net = ClassifierNet(spec.shape, spec.num_classes, recipe_for(dataset))
            net.load_state_dict(load_tensors(weights))
        elif not train_if_missing:
            raise ConfigError(f"no cached classifier for {dataset!r} under {folder}")
        else:
            net, info = train_classifier(dataset, log=log)
            info["key"] = key
            save_tensors(weights, net.state_dict())
            write_json(meta, info)
    net.eval().requires_grad_(False)
    info = {**info, "weights": weights_fingerprint(net)}
    _MEMO[memo_key] = (net, info)
    return net, info


def _load_pinned(folder: Path, dataset: str, key: str) -> tuple[ClassifierNet, dict]:
    """A pinned classifier, checked: its weights must be the ones its info records."""
    memo_key = (str(folder.resolve()), key)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    weights, meta = folder / f"{key}.pt", folder / f"{key}.json"
    fix = (f"restore both files from where they came (`git checkout -- {folder}` for committed "
           "results), or delete the folder to score new runs with this machine's classifier")
    try:
        info = json.loads(meta.read_text())
        spec = dataset_spec(dataset)
        net = ClassifierNet(spec.shape, spec.num_classes, recipe_for(dataset))
        net.load_state_dict(load_tensors(weights))
    except Exception as exc:  # missing info, torn file, another architecture
        raise ConfigError(f"the pinned classifier {weights} cannot be read "
                          f"({type(exc).__name__}: {exc}); {fix}") from exc
    found = weights_fingerprint(net)
    if not isinstance(info, dict) or info.get("weights") != found:
        recorded = info.get("weights") if isinstance(info, dict) else None
        raise ConfigError(f"the pinned classifier {weights} holds weights {found}, but {meta} "
                          f"records {recorded!r}; {fix}")
    net.eval().requires_grad_(False)
    _MEMO[memo_key] = (net, info)
    return net, info


def pin(dataset: str, folder: Path | str) -> dict:
    """Pin the classifier that :func:`load_classifier` gives here (cache or pin) in
    ``folder``: its weights and its info with their fingerprint. A pin is never replaced:
    where ``folder`` already holds one (another grid pinned first), that one stays and its
    info is returned; else the info of the weights pinned now."""
    net, info = load_classifier(dataset)
    weights = pinned_file(Path(folder), dataset)
    # The lock (in the cache: nothing extra in the results) serialises the drivers of one host.
    with locked(cache_dir() / "locks" / f"pin-{key_hash(str(weights.resolve()))}"):
        if weights.exists():
            return json.loads(weights.with_suffix(".json").read_text())
        # Each write is atomic, the info first: a pin is its .pt, so one stopped between is none.
        write_json(weights.with_suffix(".json"), info)
        save_tensors(weights, net.state_dict())
    return info


def inference_body(net: ClassifierNet) -> nn.Sequential:
    """``net.body`` for fast inference: BatchNorm folded into the preceding conv/linear,
    channels-last layout (about 1.7x faster on CPU; same function up to float rounding)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    mods, out, i = list(net.body), [], 0
    while i < len(mods):
        m, nxt = mods[i], mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            out.append(fuse_conv_bn_eval(m, nxt))
            i += 2
        elif isinstance(m, nn.Linear) and isinstance(nxt, nn.BatchNorm1d):
            out.append(fuse_linear_bn_eval(m, nxt))
            i += 2
        else:
            out.append(m)
            i += 1
    return nn.Sequential(*out).eval().to(memory_format=torch.channels_last).requires_grad_(False)


class ClassifierFeatures(FeatureNet):
    """A dataset's classifier as a feature network: 128-d penultimate features.

    Images with ``k`` times the classifier's channels (Stacked MNIST: 3 = 3 x 1) are
    split into ``k`` single images; their features are concatenated (k x 128) and
    :attr:`last_logits` holds (N, k, classes) for mode counting.
    """

    name = "classifier"

    def __init__(self, net: ClassifierNet, info: dict, channels: int | None = None) -> None:
        super().__init__()
        # Own copies (fused body, head): moving this module to a device must not move the
        # cached ClassifierNet that other evaluations in this process share.
        self.info = info
        self.body = inference_body(copy.deepcopy(net))
        self.head = copy.deepcopy(net.head).eval().requires_grad_(False)
        channels = channels or net.in_channels
        if channels % net.in_channels:
            raise ConfigError(f"images with {channels} channels do not fit a classifier "
                              f"of {net.in_channels}-channel images")
        self.groups = channels // net.in_channels
        self.num_features = FEATURE_DIM * self.groups
        self.last_logits: torch.Tensor | None = None

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.reshape(n * self.groups, c // self.groups, h, w) * 2.0 - 1.0  # as net.features
        feats = self.body(x.contiguous(memory_format=torch.channels_last))
        self.last_logits = self.head(feats).reshape(n, self.groups, -1)
        return feats.reshape(n, -1)

    def identity(self) -> dict:
        out = {"name": self.name, "classifier": self.info.get("key"), "groups": self.groups}
        if self.info.get("weights"):  # real statistics follow the weights, not the recipe alone
            out["weights"] = self.info["weights"]
        return out

    def provenance(self) -> dict:
        out = {"name": self.name, "classifier_dataset": self.info["dataset"],
               "classifier_key": self.info.get("key"),
               "classifier_test_accuracy": self.info["test_accuracy"],
               "feature_dim": self.num_features}
        if self.info.get("weights"):  # which trained weights (absent where a test builds one)
            out["classifier_weights"] = self.info["weights"]
        out.update({k: v for k, v in self.info.items() if k.startswith("stacked_")})  # stacked data
        return out


def classifier_features(dataset: str, device: torch.device | str = "cpu", log=None) -> ClassifierFeatures:
    """The classifier feature network for images of ``dataset`` (stacked: per channel)."""
    base = base_dataset(dataset)
    net, info = load_classifier(base, log=log)
    if is_stacked(dataset):  # the per-channel accuracy on stacked test images: provenance
        # cached per weights, not per recipe: a pinned classifier is another training
        name = "-".join(filter(None, (info.get("key") or classifier_key(base), info.get("weights"))))
        info = {**info, **stacked_accuracy(dataset, net, name)}
    return ClassifierFeatures(net, info, dataset_spec(dataset).shape[0]).to(device)
