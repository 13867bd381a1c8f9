"""Data for gence_jax: sources, validation splits, regimes, augmentation, batching and device placement.

Quick start::

    from gence_jax import data
    ds = data.load_dataset("cifar10", seed=0, regimes="symmetric:0.4")   # TFDS (TensorFlow imported lazily)
    ds = data.load_dataset("digits", seed=0)                              # offline, scikit-learn's digits
    ds = data.load_dataset("../shared/data/cifar10_subset.npz", seed=0, regimes="longtail:exp:10")
    for batch in ds.train_batches(128, num_epochs=1):                      # {"x", "label", "mask"} NumPy
        batch = data.to_device(batch)                                      # global jax.Arrays, batch-sharded
    for batch in ds.eval_batches("test", 500):                             # padded last batch, mask marks real rows
        ...
    ds.info["regimes"]                                                     # what each regime realised
    ds = data.load_stream_dataset("clothing1m:/data/clothing1m", seed=0)  # image files streamed from disk (grain)

TensorFlow / tensorflow_datasets, scikit-learn and PIL are imported only inside the loaders that need them.
Every accepted dataset name is parsed by :func:`parse_dataset_spec` (no I/O); data is checked as it is loaded, and bad
data raises :class:`DataError` (a ValueError) naming the dataset, the array and the first bad row.
"""

from gence_jax.data import ood, regimes, releases, sources, stream
from gence_jax.data.dataset import Dataset, apply_regimes, build_dataset, from_arrays, load_dataset
from gence_jax.data.ood import load_ood_inputs, load_ood_sets, parse_ood_datasets
from gence_jax.data.pipeline import (
  Normalizer,
  apply_crop_flip,
  batch_sharding,
  compute_normalizer,
  crop_flip_params,
  eval_batches,
  local_batch_slice,
  num_eval_batches,
  prefetch_to_device,
  random_crop_flip,
  random_split,
  steps_per_epoch,
  stratified_split,
  to_device,
  train_batches,
)
from gence_jax.data.regimes import (
  Regime,
  cifar10_asymmetric_noise,
  cifar100_asymmetric_noise,
  cifar100_block_noise,
  cifar100_superclass_noise,
  derive_seed,
  instance_dependent_noise,
  long_tail,
  long_tail_counts,
  long_tail_indices,
  pair_flip_noise,
  parse_regimes,
  realised_transition_matrix,
  small_data,
  small_data_indices,
  symmetric_noise,
  symmetric_uniform_noise,
  transition_matrix_noise,
  transition_symmetric_noise,
)
from gence_jax.data.sources import (
  CIFAR10_CLASS_NAMES,
  CIFAR100_FINE_NAMES,
  CIFAR_N_LABEL_SETS,
  TFDS_DATASETS,
  RawData,
  load_cifar_n,
  load_digits,
  load_medmnist,
  load_npz,
  load_tfds,
  load_tiny_imagenet,
  raw_from_arrays,
  raw_from_mapping,
)
from gence_jax.data.spec import (
  DatasetSpec,
  check_dataset_name,
  check_dataset_spec,
  data_fingerprint,
  parse_dataset_spec,
)
from gence_jax.data.stream import StreamingDataset, load_stream_dataset
from gence_jax.data.validate import DataError, DataWarning, validate_arrays, validate_splits

__all__ = [
  "regimes",
  "ood",
  "releases",
  "stream",
  "StreamingDataset",
  "load_stream_dataset",
  "DatasetSpec",
  "parse_dataset_spec",
  "check_dataset_spec",
  "check_dataset_name",
  "data_fingerprint",
  "DataError",
  "DataWarning",
  "validate_arrays",
  "validate_splits",
  "parse_ood_datasets",
  "load_ood_inputs",
  "load_ood_sets",
  "Dataset",
  "Regime",
  "Normalizer",
  "load_dataset",
  "from_arrays",
  "build_dataset",
  "apply_regimes",
  *sources.__all__,
  "parse_regimes",
  "derive_seed",
  "symmetric_noise",
  "transition_symmetric_noise",
  "pair_flip_noise",
  "cifar10_asymmetric_noise",
  "cifar100_asymmetric_noise",
  "cifar100_superclass_noise",
  "cifar100_block_noise",
  "symmetric_uniform_noise",
  "transition_matrix_noise",
  "instance_dependent_noise",
  "realised_transition_matrix",
  "long_tail",
  "long_tail_indices",
  "long_tail_counts",
  "small_data",
  "small_data_indices",
  "stratified_split",
  "random_split",
  "compute_normalizer",
  "crop_flip_params",
  "apply_crop_flip",
  "random_crop_flip",
  "train_batches",
  "eval_batches",
  "steps_per_epoch",
  "num_eval_batches",
  "local_batch_slice",
  "batch_sharding",
  "to_device",
  "prefetch_to_device",
]
