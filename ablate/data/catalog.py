"""The dataset catalogue: every dataset by name, availability, provisioning, and the
split logic.

Splits: ``train`` (the official training split minus a fixed validation hold-out),
``val`` (that hold-out: used for checkpoint selection and training curves, never the
test split) and ``test`` (the official test split: final metrics).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ablate.data import sources
from ablate.data.core import SPLIT_SEED, SPLITS, VAL_SIZE, DatasetSpec, ImageSet, data_root
from ablate.data.stacked import STACKED, stacked_spec
from ablate.errors import ConfigError, DataUnavailable

DATASETS: dict[str, DatasetSpec] = dict(sources.SOURCES)
DATASETS.update({name: stacked_spec(base, sources.SOURCES[base]) for name, base in STACKED.items()})


def register_dataset(name: str, spec: DatasetSpec) -> None:
    """Add a dataset (a derived one names its ``base``)."""
    DATASETS[name] = spec
    _official_split.cache_clear()


def is_stacked(name: str) -> bool:
    """Whether ``name`` is a Stacked (1000-mode, three-channel) dataset."""
    return name in STACKED


def base_dataset(name: str) -> str:
    """The dataset whose classifier scores ``name`` (itself unless derived)."""
    return dataset_spec(name).base or name


def availability(name: str, root: Path | None = None) -> tuple[bool, str]:
    """(available here?, where from) without downloading anything."""
    root = Path(root or data_root())
    base = dataset_spec(name).base
    if base is not None:  # derived datasets are available where their base is
        ok, where = availability(base, root)
        return ok, f"derived from {base}: {where}"
    return sources.availability(name, root)


def provision(name: str, root: Path | None = None, download: bool | None = None) -> str:
    """Make dataset ``name`` available under the data root; return its source."""
    root = Path(root or data_root())
    spec = dataset_spec(name)
    if spec.base is None and name in sources.TORCHVISION:
        return sources.provision(name, root, download)
    ok, source = availability(name, root)
    if not ok:
        raise DataUnavailable(f"dataset {name!r} is not available: {source}")
    return source


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}") from None


@functools.lru_cache(maxsize=4)
def _official_split(name: str, train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Cached per process: a grid worker loads each dataset once, not once per run."""
    return DATASETS[name].loader(train, root)


def check_batch_size(name: str, batch_size: int, label: str, provision: bool = True) -> str | None:
    """Refuse a batch larger than dataset ``name``'s training split (``label`` names the
    setting in the message, e.g. ``"--batch-size 128"``); a note (not an error) where the
    data is not here to count. ``provision=False`` (a dry run, which writes nothing)
    counts only data already here: nothing is downloaded or installed."""
    if not provision and not sources.installed(base_dataset(name), Path(data_root())):
        return (f"could not check batch_size against {name} without fetching it ({availability(name)[1]}); "
                "a real run provisions it first")
    try:
        n = len(load(name, "train"))
    except DataUnavailable as exc:
        return f"could not check batch_size against {name} here: {exc}"
    if batch_size > n:
        raise ConfigError(f"{label} exceeds the {n} training images of {name}; valid: 1 .. {n}")
    return None


def load(name: str, split: str = "train", root: Path | None = None) -> ImageSet:
    """Load ``split`` of dataset ``name`` as uint8 tensors with provenance."""
    spec = dataset_spec(name)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = Path(root or data_root())
    images, labels, source = _official_split(name, split != "test", root)
    if split != "test":
        n_val = min(VAL_SIZE, len(labels) // 10)
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
        idx = perm[:n_val] if split == "val" else perm[n_val:].sort().values
        images, labels = images[idx], labels[idx]
    else:  # never hand out the cached tensors themselves
        images, labels = images.clone(), labels.clone()
    return ImageSet(images.contiguous(), labels, name, split, source, spec.num_classes)


