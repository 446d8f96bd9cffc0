"""Evaluation data: ``DSample`` and the dataset loaders of ``isegm.data.datasets``."""
from .datasets import (DATASET_NAMES, WSESEG_CLASSES, DatasetError, DatasetNotFoundError, FirstSamples, ISDataset,
                       get_dataset)
from .sample import DSample

__all__ = ["DATASET_NAMES", "WSESEG_CLASSES", "DSample", "DatasetError", "DatasetNotFoundError", "FirstSamples",
           "ISDataset", "get_dataset"]
