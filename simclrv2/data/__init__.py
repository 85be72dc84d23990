"""Datasets, SimCLR augmentations and the tf.data pipelines of the three stages.

See docs/CONTRACTS.md (## simclrv2.data) and docs/data.md.
"""

from simclrv2.data.augment import AugmentConfig
from simclrv2.data.pipeline import eval_dataset, finetune_dataset, pretrain_dataset
from simclrv2.data.sources import (DataNotFoundError, Source, check_split, load_fashion_mnist,
                                   load_folder, load_labeled, load_unlabeled)
from simclrv2.data.subsets import label_subset, load_subset, save_subset, subset_for_run

__all__ = [
    "AugmentConfig", "DataNotFoundError", "Source", "check_split", "eval_dataset",
    "finetune_dataset", "label_subset", "load_fashion_mnist", "load_folder", "load_labeled",
    "load_subset", "load_unlabeled", "pretrain_dataset", "save_subset", "subset_for_run",
]
