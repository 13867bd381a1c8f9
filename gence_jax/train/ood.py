"""Out-of-distribution detection in the training program (the config's ``ood`` block).

After training, the selected (best-on-validation) model scores the in-distribution TEST split and the test split of
every dataset in ``ood.datasets`` with each score of :data:`gence_jax.metrics.OOD_SCORES`:

* ``max_prob``: max_k p_k and ``entropy``: -H(p), with p the loss's OWN probability link (``loss.probs``: softmax,
  or the MGCE link for MGCE models);
* ``energy``: T logsumexp(z / T) with T = 1, on the LOGITS (the softmax model's negative free energy; for MGCE it is
  still the logsumexp of the logits).

Every score is oriented so that higher = more in-distribution, and the detection metrics treat the in-distribution
test set as the positive class: ``auroc``, ``aupr_in`` (in-distribution positive), ``aupr_out`` (OOD positive, score
negated), ``fpr95`` (fraction of OOD examples accepted at the threshold that keeps 95% of the in-distribution test
set), all from :mod:`gence_jax.metrics` and as fractions.

OOD inputs go through exactly the preprocessing of the in-distribution test set: the same
:class:`~gence_jax.data.Normalizer` (the in-distribution TRAIN statistics), no augmentation, the same batching. Their
shape must equal the in-distribution input shape (checked, with both shapes in the error, before training starts).
What counts as a dataset's "test split": TFDS ``test``; digits' held-out test fraction (as for training);
Tiny-ImageNet's official val set; an ``.npz`` file's ``x_test``, or all of ``x`` when it has no ``x_test`` (OOD labels
are never used). ``ood.max_examples > 0`` keeps a random subset of that size drawn with a FIXED seed (0), so every
run of a grid is scored on the same OOD examples.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from gence_jax import metrics

SUBSET_SEED = 0


def parse_ood_datasets(spec) -> list[str]:
  """``"tfds:svhn_cropped, my.npz"`` -> ``["tfds:svhn_cropped", "my.npz"]``; ``""`` -> ``[]``. Duplicates raise."""
  if spec is None:
    return []
  if not isinstance(spec, str):
    raise ValueError(f"expected a comma-separated string of dataset names, got {spec!r}")
  names = [s.strip() for s in spec.split(",") if s.strip()]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise ValueError(f"dataset(s) {dup} listed twice")
  return names


def load_ood_inputs(name: str, *, data_dir: str | None = None, as_images: bool = False) -> tuple[np.ndarray, dict]:
  """The inputs of the test split of OOD dataset `name` (any name `gence_jax.data.load_dataset` accepts) and a record
  of where they came from. TensorFlow is imported only for TFDS names (and then only the TFDS test split is read in
  full: the train split is asked for as ``train[:1]``)."""
  from gence_jax.data import sources

  low = name.lower()
  if low == "digits":
    return sources.load_digits(as_images=as_images).x_test, {"kind": "sklearn_digits", "split": "test"}
  if low in sources.TFDS_DATASETS or low.startswith("tfds:"):
    tfds_name = name[5:] if low.startswith("tfds:") else low
    raw = sources.load_tfds(tfds_name, data_dir=data_dir, train_split="train[:1]")
    return raw.x_test, {"kind": "tfds", "tfds_name": tfds_name, "split": "test", "version": raw.source.get("version")}
  for prefix in ("tiny_imagenet:", "tiny-imagenet:"):
    if low.startswith(prefix):
      folder = name[len(prefix) :]
      return sources.load_tiny_imagenet(folder).x_test, {"kind": "tiny_imagenet", "folder": folder, "split": "val"}
  if low in ("tiny_imagenet", "tiny-imagenet", "tiny_imagenet_200", "tiny-imagenet-200") or os.path.isdir(name):
    folder = name if os.path.isdir(name) else data_dir
    if not folder:
      raise ValueError(f"OOD dataset {name!r} needs ood.data_dir (or dataset.data_dir): the Tiny-ImageNet folder")
    sub = os.path.join(folder, "tiny-imagenet-200")
    folder = sub if os.path.isdir(sub) else folder
    return sources.load_tiny_imagenet(folder).x_test, {"kind": "tiny_imagenet", "folder": folder, "split": "val"}
  if low.endswith(".npz"):
    if not os.path.isfile(name):
      raise FileNotFoundError(f"OOD dataset file not found: {name!r}")
    with np.load(name, allow_pickle=False) as f:
      for key in ("x_test", "x"):
        if key in f.files:
          return f[key], {"kind": "npz", "path": name, "array": key}
      raise ValueError(f"OOD dataset {name!r}: expected an array x_test (or x); found {sorted(f.files)}")
  raise ValueError(f"unknown OOD dataset {name!r}")


def subset(x: np.ndarray, max_examples: int) -> tuple[np.ndarray, np.ndarray | None]:
  """At most `max_examples` rows of `x` (a sorted random subset, seed :data:`SUBSET_SEED`), and their indices
  (None when every row is kept)."""
  if max_examples <= 0 or len(x) <= max_examples:
    return x, None
  idx = np.sort(np.random.default_rng(SUBSET_SEED).choice(len(x), size=max_examples, replace=False))
  return x[idx], idx


def prepare_ood_sets(config, input_shape, in_dtype, in_name: str) -> dict[str, tuple[np.ndarray, dict]]:
  """Loads every dataset of ``config.ood.datasets`` and checks its input shape against the in-distribution one.

  Returns ``{name: (x, info)}`` in the listed order. Raises ValueError naming both shapes on a mismatch; warns when
  the dtypes differ (uint8 images next to float inputs usually means different value ranges).
  """
  out = {}
  data_dir = config.ood.data_dir or config.dataset.data_dir or None
  for name in parse_ood_datasets(config.ood.datasets):
    x, info = load_ood_inputs(name, data_dir=data_dir, as_images=config.dataset.as_images)
    x = np.asarray(x)
    shape = tuple(int(s) for s in x.shape[1:])
    if shape != tuple(input_shape):
      raise ValueError(
        f"config key 'ood.datasets': OOD dataset {name!r} has inputs of shape {shape}, but the in-distribution "
        f"dataset {in_name!r} has {tuple(input_shape)}; they must match (OOD inputs get the in-distribution "
        "preprocessing)"
      )
    if len(x) == 0:
      raise ValueError(f"config key 'ood.datasets': OOD dataset {name!r} has no test examples")
    if np.dtype(x.dtype) != np.dtype(in_dtype):
      warnings.warn(
        f"OOD dataset {name!r} has dtype {x.dtype}, the in-distribution inputs {in_dtype}: both are normalised with "
        "the in-distribution training statistics, so their value ranges should agree",
        stacklevel=2,
      )
    total = len(x)
    x, idx = subset(x, config.ood.max_examples)
    info = {**info, "num_available": int(total), "num_examples": int(len(x)), "input_shape": list(shape)}
    info["dtype"] = str(x.dtype)
    if idx is not None:
      info["subset_seed"] = SUBSET_SEED
    out[name] = (x, info)
  return out


def ood_scores(loss, logits) -> dict[str, np.ndarray]:
  """Every score of :data:`gence_jax.metrics.OOD_SCORES` for float logits [N, K], as float64 NumPy [N].

  ``max_prob`` and ``entropy`` read the probabilities through ``loss.probs`` (the loss's own link); ``energy`` takes
  the logits."""
  logits = np.asarray(logits, np.float32)
  probs = loss.probs(logits)
  out = {}
  for name, fn in metrics.OOD_SCORES.items():
    out[name] = np.asarray(fn(logits if name == "energy" else probs), np.float64)
  return out


def detection_metrics(scores_in, scores_out) -> dict[str, float]:
  """AUROC, AUPR-In, AUPR-Out and FPR at 95% TPR (in-distribution positive) of one score, as fractions."""
  return {
    "auroc": metrics.auroc(scores_in, scores_out),
    "aupr_in": metrics.aupr(scores_in, scores_out, positive="in"),
    "aupr_out": metrics.aupr(scores_in, scores_out, positive="out"),
    "fpr95": metrics.fpr_at_95_tpr(scores_in, scores_out),
  }


def evaluate_ood(loss, in_logits, ood_logits: dict, ood_info: dict | None = None) -> tuple[dict, dict]:
  """Detection metrics of every score for every OOD set against the in-distribution test logits.

  Returns ``(report, arrays)``: ``report = {"in_distribution": {...}, "datasets": {name: {"num_examples", "source",
  <score>: {"auroc", "aupr_in", "aupr_out", "fpr95"}}}}`` and ``arrays`` for ``ood_scores.npz``: ``in_<score>``,
  ``ood<i>_<score>`` and ``ood<i>_logits`` (i = position in the ``names`` array).
  """
  ood_info = ood_info or {}
  s_in = ood_scores(loss, in_logits)
  arrays = {f"in_{k}": v for k, v in s_in.items()}
  arrays["names"] = np.asarray(list(ood_logits), dtype=str)
  report = {
    "in_distribution": {"split": "test", "num_examples": int(len(in_logits))},
    "positive": "in-distribution",
    "scores": list(metrics.OOD_SCORES),
    "datasets": {},
  }
  for i, (name, logits) in enumerate(ood_logits.items()):
    s_out = ood_scores(loss, logits)
    entry = {"num_examples": int(len(logits)), "source": ood_info.get(name, {})}
    for score_name in metrics.OOD_SCORES:
      entry[score_name] = detection_metrics(s_in[score_name], s_out[score_name])
      arrays[f"ood{i}_{score_name}"] = s_out[score_name]
    arrays[f"ood{i}_logits"] = np.asarray(logits, np.float32)
    report["datasets"][name] = entry
  return report, arrays
