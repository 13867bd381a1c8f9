"""Data regimes: label noise, long tails and small data, each seeded and self-recording.

Every regime is a *pure* NumPy function. Label-noise regimes take the label vector,

    new_labels, record = symmetric_noise(labels, num_classes, rate=0.4, seed=0)

(the instance-dependent one also takes the features: ``instance_dependent_noise(x, labels, num_classes, ...)``),
and subsampling regimes take an ``(x, y)`` pair (``x`` may be any array with the same leading length, e.g. example
ids)

    (x_new, y_new), record = long_tail((x, y), num_classes, ratio=100, seed=0)

(``long_tail_indices`` / ``small_data_indices`` return the kept indices instead). ``record`` is a JSON-serialisable
dict of what was *realised*: the parameters, the seed, the number of examples flipped / kept, the realised noise rate,
the per-class counts before and after and, for label noise, the realised transition counts
``record["transition_counts"][i][j]`` = number of examples of true class ``i`` labelled ``j`` afterwards
(:func:`realised_transition_matrix` turns them into a row-stochastic matrix). The same arguments always give the same
result.

For configs and command lines, :func:`parse_regimes` turns a spec string such as
``"symmetric:0.4,longtail:exp:100,small:20"`` into a list of :class:`Regime` objects, which
:func:`gence_jax.data.load_dataset` applies in order to the training and validation splits (never to the test split).

Spec grammar (comma-separated items, each ``name:arg:arg...``; whitespace around fields ignored):

======================================  ================================================================================
``symmetric:<rate>``                    exact count flipped to a *different* class (Ma et al. 2020),
                                        :func:`symmetric_noise`
``symmetric_tm:<rate>``                 per-example flip to a different class with probability ``rate``
                                        (Patrini et al. 2017), :func:`transition_symmetric_noise`
                                        (alias ``transition:<rate>``)
``symmetric_uniform:<rate>``            exact count *resampled* uniformly from all K classes, so the true class may be
                                        kept (DivideMix, Li et al. 2020), :func:`symmetric_uniform_noise`
``pairflip:<rate>``                     pair flip c -> c+1 mod K (Han et al. 2018), :func:`pair_flip_noise`
``asym10:<rate>``                       CIFAR-10 asymmetric (Patrini et al. 2017), :func:`cifar10_asymmetric_noise`
                                        (alias ``cifar10_asym``)
``asym100_superclass:<rate>``           CIFAR-100: next fine class of the true superclass (Patrini et al. 2017's text),
                                        :func:`cifar100_superclass_noise` (aliases ``asym100``, ``cifar100_asym``)
``asym100_blocks:<rate>``               CIFAR-100: next id within blocks of 5 consecutive ids (released code of Patrini
                                        et al. 2017 and Ma et al. 2020), :func:`cifar100_block_noise`
``matrix:<file.npy|file.csv>``          user-given K x K row-stochastic matrix, each label drawn from its row,
                                        :func:`transition_matrix_noise`; inline form ``matrix:0.8 0.2;0.3 0.7``
``instance:<rate>[:<std>[:<wseed>]]``   instance-dependent noise of Xia et al. 2020, :func:`instance_dependent_noise`
                                        (needs the features: see :meth:`Regime.indices_or_labels`)
``longtail:<exp|step>:<ratio>``         long-tailed subsampling (Cao et al. 2019), :func:`long_tail`;
                                        ``longtail:<ratio>`` means ``exp``; an optional 4th field is ``n_max``
``small:<n>``                           ``n`` examples per class, :func:`small_data` (alias ``small_data``)
======================================  ================================================================================

Rates must lie in [0, 1); the asymmetric, pair-flip and ``symmetric_uniform`` regimes also accept the keyword
``:bernoulli`` as last field (per-example coin flips instead of an exact count). A matrix path may not contain a
comma (the item separator).
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = [
  "CIFAR10_ASYMMETRIC_MAP",
  "CIFAR100_SUPERCLASSES",
  "CIFAR100_SUPERCLASS_NAMES",
  "CIFAR100_FINE_TO_COARSE",
  "Regime",
  "cifar100_superclass_map",
  "cifar100_block_map",
  "cifar100_asymmetric_map",
  "class_map_noise",
  "symmetric_noise",
  "transition_symmetric_noise",
  "symmetric_uniform_noise",
  "pair_flip_noise",
  "cifar10_asymmetric_noise",
  "cifar100_superclass_noise",
  "cifar100_block_noise",
  "cifar100_asymmetric_noise",
  "load_transition_matrix",
  "check_transition_matrix",
  "transition_matrix_noise",
  "instance_dependent_transition",
  "instance_dependent_noise",
  "realised_transition_matrix",
  "long_tail_counts",
  "long_tail_indices",
  "long_tail",
  "small_data_indices",
  "small_data",
  "parse_regimes",
  "derive_seed",
]

# ---------------------------------------------------------------------------------------------------------------
# Class tables
# ---------------------------------------------------------------------------------------------------------------

#: CIFAR-10 asymmetric noise (Patrini et al. 2017, "Making Deep Neural Networks Robust to Label Noise: a Loss
#: Correction Approach", CVPR): truck->automobile, bird->airplane, cat<->dog, deer->horse.
#: CIFAR-10 ids: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse, 8 ship, 9 truck.
CIFAR10_ASYMMETRIC_MAP: dict[int, int] = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}

#: The 20 CIFAR-100 superclasses (coarse labels, in the standard alphabetical order of their names).
CIFAR100_SUPERCLASS_NAMES: tuple[str, ...] = (
  "aquatic_mammals",
  "fish",
  "flowers",
  "food_containers",
  "fruit_and_vegetables",
  "household_electrical_devices",
  "household_furniture",
  "insects",
  "large_carnivores",
  "large_man-made_outdoor_things",
  "large_natural_outdoor_scenes",
  "large_omnivores_and_herbivores",
  "medium_mammals",
  "non-insect_invertebrates",
  "people",
  "reptiles",
  "small_mammals",
  "trees",
  "vehicles_1",
  "vehicles_2",
)

#: Fine-label ids of the 5 classes of each superclass (Krizhevsky 2009, "Learning Multiple Layers of Features from
#: Tiny Images", Appendix; ids follow the standard alphabetical order of the 100 fine label names, 0 apple ...
#: 99 worm). Each row is sorted; row i is superclass ``CIFAR100_SUPERCLASS_NAMES[i]``.
CIFAR100_SUPERCLASSES: tuple[tuple[int, ...], ...] = (
  (4, 30, 55, 72, 95),  # aquatic mammals: beaver, dolphin, otter, seal, whale
  (1, 32, 67, 73, 91),  # fish: aquarium_fish, flatfish, ray, shark, trout
  (54, 62, 70, 82, 92),  # flowers: orchid, poppy, rose, sunflower, tulip
  (9, 10, 16, 28, 61),  # food containers: bottle, bowl, can, cup, plate
  (0, 51, 53, 57, 83),  # fruit and vegetables: apple, mushroom, orange, pear, sweet_pepper
  (22, 39, 40, 86, 87),  # household electrical devices: clock, keyboard, lamp, telephone, television
  (5, 20, 25, 84, 94),  # household furniture: bed, chair, couch, table, wardrobe
  (6, 7, 14, 18, 24),  # insects: bee, beetle, butterfly, caterpillar, cockroach
  (3, 42, 43, 88, 97),  # large carnivores: bear, leopard, lion, tiger, wolf
  (12, 17, 37, 68, 76),  # large man-made outdoor things: bridge, castle, house, road, skyscraper
  (23, 33, 49, 60, 71),  # large natural outdoor scenes: cloud, forest, mountain, plain, sea
  (15, 19, 21, 31, 38),  # large omnivores and herbivores: camel, cattle, chimpanzee, elephant, kangaroo
  (34, 63, 64, 66, 75),  # medium mammals: fox, porcupine, possum, raccoon, skunk
  (26, 45, 77, 79, 99),  # non-insect invertebrates: crab, lobster, snail, spider, worm
  (2, 11, 35, 46, 98),  # people: baby, boy, girl, man, woman
  (27, 29, 44, 78, 93),  # reptiles: crocodile, dinosaur, lizard, snake, turtle
  (36, 50, 65, 74, 80),  # small mammals: hamster, mouse, rabbit, shrew, squirrel
  (47, 52, 56, 59, 96),  # trees: maple_tree, oak_tree, palm_tree, pine_tree, willow_tree
  (8, 13, 48, 58, 90),  # vehicles 1: bicycle, bus, motorcycle, pickup_truck, train
  (41, 69, 81, 85, 89),  # vehicles 2: lawn_mower, rocket, streetcar, tank, tractor
)


def _fine_to_coarse() -> tuple[int, ...]:
  out = [-1] * 100
  for coarse, fines in enumerate(CIFAR100_SUPERCLASSES):
    for f in fines:
      out[f] = coarse
  assert -1 not in out
  return tuple(out)


#: ``CIFAR100_FINE_TO_COARSE[fine] == coarse`` (derived from :data:`CIFAR100_SUPERCLASSES`).
CIFAR100_FINE_TO_COARSE: tuple[int, ...] = _fine_to_coarse()


def cifar100_superclass_map() -> dict[int, int]:
  """Map each CIFAR-100 fine class to the next fine class (by id) of its *true* superclass, circularly.

  With the five fine ids of a superclass sorted, ``f_0 < ... < f_4`` (:data:`CIFAR100_SUPERCLASSES`), the map is
  ``f_j -> f_{(j + 1) mod 5}``. This is the CIFAR-100 asymmetric noise as the text of Patrini et al. (2017, CVPR)
  describes it: each class flips into the next one of its super-class, circularly.
  """
  out: dict[int, int] = {}
  for fines in CIFAR100_SUPERCLASSES:
    for j, f in enumerate(fines):
      out[f] = fines[(j + 1) % len(fines)]
  return out


def cifar100_block_map() -> dict[int, int]:
  """Map each CIFAR-100 fine id ``c`` to the next id of its block of five *consecutive* ids, circularly:
  ``c -> 5 * (c // 5) + (c + 1) mod 5``.

  This is what the released code of Patrini et al. (2017) and of Ma et al. (2020, ICML, "Normalized Loss Functions
  for Deep Learning with Noisy Labels") builds for CIFAR-100 asymmetric noise: a 5 x 5 circular "next class" block
  on the diagonal for ids ``5i .. 5i+4``. With the standard alphabetical fine ids these blocks are *not* the
  superclasses; the map agrees with :func:`cifar100_superclass_map` on 4 of the 100 classes only.
  """
  return {c: 5 * (c // 5) + (c + 1) % 5 for c in range(100)}


def cifar100_asymmetric_map() -> dict[int, int]:
  """Alias of :func:`cifar100_superclass_map` (the ``asym100`` regime is ``asym100_superclass``)."""
  return cifar100_superclass_map()


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def _tag(x: Any) -> int:
  if isinstance(x, (int, np.integer)):
    return int(x) & 0xFFFFFFFF
  return zlib.crc32(str(x).encode("utf-8"))


def derive_seed(seed: int, *tags: Any) -> int:
  """A 32-bit seed derived deterministically from ``seed`` and any number of int/str tags (via SeedSequence)."""
  entropy = [_tag(seed)] + [_tag(t) for t in tags]
  return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _pre(fn: str | None) -> str:
  return f"{fn}: " if fn else ""


def _check_labels(labels: Any, num_classes: int, name: str = "labels", fn: str | None = None) -> np.ndarray:
  """1-D int64 labels in ``[0, num_classes)``; ``fn`` (the public function's name) prefixes the error message."""
  pre = _pre(fn)
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"{pre}num_classes must be a positive integer, got {num_classes!r}")
  y = np.asarray(labels)
  if y.ndim != 1:
    raise ValueError(f"{pre}{name} must be a 1-D integer array, got shape {y.shape}")
  if y.size and not np.issubdtype(y.dtype, np.integer):
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.equal(np.mod(y, 1), 0)):
      raise ValueError(f"{pre}{name} must be integers, got dtype {y.dtype}")
  y = y.astype(np.int64)
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f"{pre}{name} out of range [0, {num_classes}): min {int(y.min())}, max {int(y.max())}")
  return y


def _check_rate(rate: float, name: str = "rate", fn: str | None = None) -> float:
  pre = _pre(fn)
  try:
    r = float(rate)
  except (TypeError, ValueError):
    raise ValueError(f"{pre}{name} must be a number in [0, 1), got {rate!r}") from None
  if not (0.0 <= r < 1.0):
    raise ValueError(f"{pre}{name} must lie in [0, 1), got {rate!r}")
  return r


def _transition_counts(y_old: np.ndarray, y_new: np.ndarray, num_classes: int) -> np.ndarray:
  """``C[i, j]`` = number of examples with true label ``i`` and new label ``j``."""
  k = int(num_classes)
  return np.bincount(y_old * k + y_new, minlength=k * k).reshape(k, k)


def realised_transition_matrix(record: Mapping[str, Any]) -> np.ndarray:
  """The realised transition matrix of a label-noise record: ``T_hat[i, j] = C[i, j] / sum_j C[i, j]`` from
  ``record["transition_counts"]`` (float64, K x K). Rows of classes with no example are NaN."""
  if "transition_counts" not in record:
    raise ValueError("realised_transition_matrix: `record` has no 'transition_counts' (not a label-noise record?)")
  c = np.asarray(record["transition_counts"], dtype=np.float64)
  rows = c.sum(axis=1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(rows > 0, c / np.where(rows > 0, rows, 1.0), np.nan)


def _counts(y: np.ndarray, num_classes: int) -> list[int]:
  return [int(c) for c in np.bincount(y, minlength=num_classes)]


def _record_head(name: str, paper: str, params: dict, seed: int, num_classes: int) -> dict:
  """The fields every regime record starts with: what was applied, after which paper, with which settings."""
  return {"regime": name, "paper": paper, "params": dict(params), "seed": int(seed), "num_classes": int(num_classes)}


def _noise_record(
  name: str, paper: str, params: dict, seed: int, y_old: np.ndarray, y_new: np.ndarray, num_classes: int
) -> dict:
  flipped = y_old != y_new
  n = int(y_old.size)
  per_class = np.bincount(y_old[flipped], minlength=num_classes)
  return {
    **_record_head(name, paper, params, seed, num_classes),
    "n": n,
    "num_flipped": int(flipped.sum()),
    "realised_rate": float(flipped.mean()) if n else 0.0,
    "flipped_per_class": [int(c) for c in per_class],
    "class_counts_before": _counts(y_old, num_classes),
    "class_counts_after": _counts(y_new, num_classes),
    "transition_counts": _transition_counts(y_old, y_new, num_classes).tolist(),
  }


def _subset_record(
  name: str,
  paper: str,
  params: dict,
  seed: int,
  y_old: np.ndarray,
  idx: np.ndarray,
  num_classes: int,
  target: Sequence[int],
) -> dict:
  return {
    **_record_head(name, paper, params, seed, num_classes),
    "n_before": int(y_old.size),
    "n_after": int(idx.size),
    "target_counts": [int(t) for t in target],
    "class_counts_before": _counts(y_old, num_classes),
    "class_counts_after": _counts(y_old[idx], num_classes),
  }


def _other_class(y: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
  """Uniformly random class different from ``y`` (elementwise): y + U{1..K-1} mod K."""
  return (y + rng.integers(1, num_classes, size=y.shape)) % num_classes


# ---------------------------------------------------------------------------------------------------------------
# Label noise
# ---------------------------------------------------------------------------------------------------------------

_MA2020 = (
  "Ma, Huang, Wang, Romano, Erfani, Bailey 2020, 'Normalized Loss Functions for Deep Learning with Noisy Labels', ICML"
)
_PATRINI2017 = (
  "Patrini, Rozza, Menon, Nock, Qu 2017, 'Making Deep Neural Networks Robust to Label Noise: "
  "a Loss Correction Approach', CVPR"
)
_HAN2018 = (
  "Han, Yao, Yu, Niu, Xu, Hu, Tsang, Sugiyama 2018, 'Co-teaching: Robust Training of Deep Neural "
  "Networks with Extremely Noisy Labels', NeurIPS"
)
_LI2020 = (
  "Li, Socher, Hoi 2020, 'DivideMix: Learning with Noisy Labels as Semi-supervised Learning', ICLR "
  "(symmetric noise as in its released code)"
)
_XIA2020 = (
  "Xia, Liu, Han, Wang, Gong, Liu, Niu, Tao, Sugiyama 2020, 'Part-dependent Label Noise: Towards "
  "Instance-dependent Label Noise', NeurIPS (instance-dependent noise generation, its Algorithm 2)"
)
_CAO2019 = (
  "Cao, Wei, Gaidon, Arechiga, Ma 2019, 'Learning Imbalanced Datasets with Label-Distribution-Aware "
  "Margin Loss', NeurIPS"
)


def symmetric_noise(labels: Any, num_classes: int, *, rate: float, seed: int) -> tuple[np.ndarray, dict]:
  """Symmetric label noise with an exact count (Ma et al. 2020, ICML, "Normalized Loss Functions").

  Exactly ``round(rate * n)`` examples (Python ``round``, half to even) are chosen without replacement, and each is
  relabelled uniformly among the *other* ``K - 1`` classes, so exactly that many labels change and none is
  "flipped" to itself. Needs ``num_classes >= 2`` when ``rate > 0``.

  Returns ``(new_labels, record)``; ``record["num_flipped"] == round(rate * n)``.
  """
  y = _check_labels(labels, num_classes)
  r = _check_rate(rate)
  n = y.size
  m = int(round(r * n))
  if m and num_classes < 2:
    raise ValueError("num_classes must be >= 2 for label noise")
  rng = np.random.default_rng(seed)
  new = y.copy()
  idx = rng.choice(n, size=m, replace=False) if m else np.zeros(0, np.int64)
  new[idx] = _other_class(y[idx], num_classes, rng)
  rec = _noise_record("symmetric", _MA2020, {"rate": r}, seed, y, new, num_classes)
  rec["target_num_flipped"] = m
  return new, rec


def transition_symmetric_noise(labels: Any, num_classes: int, *, rate: float, seed: int) -> tuple[np.ndarray, dict]:
  """Symmetric noise through the transition matrix T = (1-rate) I + rate/(K-1) (1 1^T - I).

  Each label is independently kept with probability ``1 - rate`` and otherwise replaced by a class drawn uniformly
  from the other ``K - 1`` classes (per-example Bernoulli; the convention of Patrini et al. 2017 and Han et al.
  2018). The realised rate (``record["realised_rate"]``) is Binomial(n, rate)/n, not exactly ``rate``.
  """
  y = _check_labels(labels, num_classes)
  r = _check_rate(rate)
  if r > 0 and num_classes < 2:
    raise ValueError("num_classes must be >= 2 for label noise")
  rng = np.random.default_rng(seed)
  flip = rng.random(y.size) < r
  new = y.copy()
  new[flip] = _other_class(y[flip], num_classes, rng)
  return new, _noise_record("symmetric_tm", _PATRINI2017, {"rate": r}, seed, y, new, num_classes)


def symmetric_uniform_noise(
  labels: Any, num_classes: int, *, rate: float, seed: int, exact: bool = True
) -> tuple[np.ndarray, dict]:
  """Symmetric noise that may keep the true class (the convention of DivideMix, Li et al. 2020, ICLR).

  A label chosen for corruption is replaced by a class drawn uniformly from *all* ``K`` classes, its own included,
  so the transition matrix is

      T = (1 - r) I + (r / K) 1 1^T,     P(noisy label != true label) = r (1 - 1/K).

  ``exact=True`` (default, as in DivideMix's code): exactly ``round(rate * n)`` examples are chosen without
  replacement and resampled; ``exact=False``: each example is resampled independently with probability ``rate``.
  The nominal ``rate`` is ``record["params"]["rate"]``; ``record["num_resampled"]`` counts the resampled examples,
  ``record["expected_rate"] = r (1 - 1/K)`` and ``record["realised_rate"]`` is the fraction whose label changed.
  Contrast :func:`symmetric_noise` (Ma et al. 2020), where every chosen label changes to a *different* class.
  """
  fn = "symmetric_uniform_noise"
  y = _check_labels(labels, num_classes, fn=fn)
  r = _check_rate(rate, fn=fn)
  n = y.size
  rng = np.random.default_rng(seed)
  if exact:
    m = int(round(r * n))
    idx = rng.choice(n, size=m, replace=False) if m else np.zeros(0, np.int64)
  else:
    idx = np.flatnonzero(rng.random(n) < r)
  new = y.copy()
  new[idx] = rng.integers(0, num_classes, size=idx.size)
  rec = _noise_record("symmetric_uniform", _LI2020, {"rate": r, "exact": bool(exact)}, seed, y, new, num_classes)
  rec["num_resampled"] = int(idx.size)
  rec["expected_rate"] = r * (1.0 - 1.0 / num_classes)
  return new, rec


def class_map_noise(
  labels: Any,
  num_classes: int,
  *,
  mapping: Mapping[int, int],
  rate: float,
  seed: int,
  exact: bool = True,
  name: str = "class_map",
  paper: str = "",
) -> tuple[np.ndarray, dict]:
  """Flip each source class ``c`` in ``mapping`` to ``mapping[c]`` with probability/fraction ``rate``.

  ``exact=True`` (default): in every source class with ``n_c`` examples, exactly ``round(rate * n_c)`` examples
  (chosen without replacement) are flipped. ``exact=False``: each example of a source class flips independently
  with probability ``rate``. Flips are decided on the *original* labels, so a swap such as cat<->dog never
  flips an example twice. Classes not in ``mapping`` are untouched.
  """
  y = _check_labels(labels, num_classes)
  r = _check_rate(rate)
  for src, dst in mapping.items():
    if not (0 <= int(src) < num_classes and 0 <= int(dst) < num_classes):
      raise ValueError(f"mapping {src}->{dst} out of range for num_classes={num_classes}")
  rng = np.random.default_rng(seed)
  new = y.copy()
  targets = {}
  for src in sorted(int(s) for s in mapping):
    dst = int(mapping[src])
    members = np.flatnonzero(y == src)
    if exact:
      m = int(round(r * members.size))
      chosen = rng.choice(members, size=m, replace=False) if m else members[:0]
    else:
      chosen = members[rng.random(members.size) < r]
    targets[str(src)] = dst
    new[chosen] = dst
  params = {"rate": r, "exact": bool(exact), "mapping": targets}
  rec = _noise_record(name, paper, params, seed, y, new, num_classes)
  return new, rec


def pair_flip_noise(
  labels: Any, num_classes: int, *, rate: float, seed: int, exact: bool = True
) -> tuple[np.ndarray, dict]:
  """Pair-flip noise (Han et al. 2018, Co-teaching): class ``c`` -> ``(c + 1) mod K``.

  With ``exact=True`` (default) exactly ``round(rate * n_c)`` examples of *each* class ``c`` are flipped
  (count per class); with ``exact=False`` each example flips with probability ``rate``.
  """
  mapping = {c: (c + 1) % num_classes for c in range(int(num_classes))}
  return class_map_noise(
    labels, num_classes, mapping=mapping, rate=rate, seed=seed, exact=exact, name="pairflip", paper=_HAN2018
  )


def cifar10_asymmetric_noise(
  labels: Any, num_classes: int = 10, *, rate: float, seed: int, exact: bool = True
) -> tuple[np.ndarray, dict]:
  """CIFAR-10 asymmetric noise (Patrini et al. 2017): truck->automobile, bird->airplane, cat<->dog, deer->horse.

  Each source class is flipped with ``rate`` (exact count per source class by default, see
  :func:`class_map_noise`); the other five classes are clean, so the overall realised rate is about ``rate / 2``.
  """
  if num_classes != 10:
    raise ValueError(f"num_classes must be 10 for CIFAR-10 asymmetric noise, got {num_classes}")
  return class_map_noise(
    labels, 10, mapping=CIFAR10_ASYMMETRIC_MAP, rate=rate, seed=seed, exact=exact, name="asym10", paper=_PATRINI2017
  )


#: The two CIFAR-100 asymmetric settings: variant -> (regime name, fine-class map, source).
_CIFAR100_VARIANTS = {
  "superclass": (
    "asym100_superclass",
    cifar100_superclass_map,
    _PATRINI2017 + " (the paper's description: within true superclasses)",
  ),
  "blocks": (
    "asym100_blocks",
    cifar100_block_map,
    _MA2020 + " (released code: blocks of 5 consecutive ids, as in the code of Patrini et al. 2017)",
  ),
}


def _cifar100_noise(
  fn: str, variant: str, labels: Any, num_classes: int, rate: float, seed: int, exact: bool
) -> tuple[np.ndarray, dict]:
  """:func:`class_map_noise` with the map of CIFAR-100 ``variant`` (``num_classes`` must be 100)."""
  if num_classes != 100:
    raise ValueError(f"{fn}: `num_classes` must be 100 for CIFAR-100 asymmetric noise, got {num_classes!r}")
  name, mapping, paper = _CIFAR100_VARIANTS[variant]
  return class_map_noise(labels, 100, mapping=mapping(), rate=rate, seed=seed, exact=exact, name=name, paper=paper)


def cifar100_superclass_noise(
  labels: Any, num_classes: int = 100, *, rate: float, seed: int, exact: bool = True
) -> tuple[np.ndarray, dict]:
  """CIFAR-100 asymmetric noise within the *true* superclasses, as the text of Patrini et al. (2017, CVPR)
  describes it: each fine class flips, with ``rate``, to the next fine class of its superclass, circularly
  (:func:`cifar100_superclass_map`; superclass table :data:`CIFAR100_SUPERCLASSES`, Krizhevsky 2009).

  ``exact=True`` (default): exactly ``round(rate * n_c)`` examples of each class flip; ``exact=False``: each
  example flips with probability ``rate`` (see :func:`class_map_noise`). Regime ``asym100_superclass``.
  """
  return _cifar100_noise("cifar100_superclass_noise", "superclass", labels, num_classes, rate, seed, exact)


def cifar100_block_noise(
  labels: Any, num_classes: int = 100, *, rate: float, seed: int, exact: bool = True
) -> tuple[np.ndarray, dict]:
  """CIFAR-100 asymmetric noise within blocks of five consecutive ids, as the released code of Ma et al. (2020,
  ICML) -- and, before it, of Patrini et al. (2017) -- builds it: ``c -> 5 (c // 5) + (c + 1) mod 5`` with
  ``rate`` (:func:`cifar100_block_map`). Reproduces the CIFAR-100 asymmetric setting behind Ma et al.'s numbers.

  Their code draws each label from its row of the transition matrix (per-example, ``exact=False`` here); the default
  ``exact=True`` flips exactly ``round(rate * n_c)`` examples of each class. Regime ``asym100_blocks``.
  """
  return _cifar100_noise("cifar100_block_noise", "blocks", labels, num_classes, rate, seed, exact)


def cifar100_asymmetric_noise(
  labels: Any, num_classes: int = 100, *, rate: float, seed: int, exact: bool = True, variant: str = "superclass"
) -> tuple[np.ndarray, dict]:
  """CIFAR-100 asymmetric noise; ``variant="superclass"`` (default, :func:`cifar100_superclass_noise`) or
  ``"blocks"`` (:func:`cifar100_block_noise`). The two differ on 96 of the 100 classes."""
  if variant == "superclass":
    return cifar100_superclass_noise(labels, num_classes, rate=rate, seed=seed, exact=exact)
  if variant == "blocks":
    return cifar100_block_noise(labels, num_classes, rate=rate, seed=seed, exact=exact)
  raise ValueError(f"cifar100_asymmetric_noise: `variant` must be 'superclass' or 'blocks', got {variant!r}")


# ---------------------------------------------------------------------------------------------------------------
# User-given transition matrices
# ---------------------------------------------------------------------------------------------------------------

#: Tolerance on |sum_j T[i, j] - 1| for a user-given transition matrix.
ROW_SUM_ATOL = 1e-6


def load_transition_matrix(path: str | os.PathLike) -> np.ndarray:
  """Read a K x K matrix from a ``.npy`` file or a ``.csv`` file (comma-separated, one row per line, ``#``
  comments allowed). Returns float64; validate it with :func:`check_transition_matrix`."""
  p = os.fspath(path)
  low = p.lower()
  if not low.endswith((".npy", ".csv")):
    raise ValueError(f"load_transition_matrix: `path` must end in .npy or .csv, got {p!r}")
  if not os.path.isfile(p):
    raise FileNotFoundError(f"load_transition_matrix: `path` {p!r} does not exist")
  try:
    if low.endswith(".npy"):
      m = np.load(p, allow_pickle=False)
    else:
      m = np.loadtxt(p, delimiter=",", ndmin=2, dtype=np.float64)
    return np.asarray(m, dtype=np.float64)
  except ValueError as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"load_transition_matrix: cannot read a numeric matrix from {p!r}: {msg}") from None


def check_transition_matrix(
  matrix: Any, num_classes: int | None = None, *, fn: str = "check_transition_matrix", atol: float = ROW_SUM_ATOL
) -> np.ndarray:
  """Validate a row-stochastic transition matrix ``T[i, j] = P(noisy = j | true = i)``: square, ``K x K`` with
  ``K == num_classes`` (when given), finite, non-negative, every row summing to 1 within ``atol``. Returns it as
  float64, values unchanged (the samplers divide by the row sum). Errors are one line, prefixed by ``fn``."""
  try:
    t = np.asarray(matrix, dtype=np.float64)
  except (TypeError, ValueError):
    raise ValueError(f"{fn}: `matrix` must be a numeric K x K array, got {type(matrix).__name__}") from None
  if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 1:
    raise ValueError(f"{fn}: `matrix` must be a square K x K array, got shape {t.shape}")
  k = t.shape[0]
  if num_classes is not None and k != num_classes:
    raise ValueError(f"{fn}: `matrix` is {k} x {k} but num_classes is {num_classes}")
  bad = ~np.isfinite(t)
  if bad.any():
    i, j = (int(v) for v in np.argwhere(bad)[0])
    raise ValueError(f"{fn}: `matrix` has a non-finite entry {t[i, j]} at ({i}, {j})")
  if (t < 0).any():
    i, j = (int(v) for v in np.argwhere(t < 0)[0])
    raise ValueError(f"{fn}: `matrix` has a negative entry {t[i, j]:.6g} at ({i}, {j}); rows must be probabilities")
  sums = t.sum(axis=1)
  off = np.abs(sums - 1.0) > atol
  if off.any():
    i = int(np.flatnonzero(off)[0])
    raise ValueError(f"{fn}: `matrix` row {i} sums to {sums[i]:.9g}, not 1 (tolerance {atol:g})")
  return t


def _sample_rows(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
  """Inverse-CDF draw of one class per row of ``probs`` (rows summing to ~1) from uniforms ``u`` in [0, 1):
  the first ``j`` with ``cumsum(p)[j] > u * sum(p)``, so zero-probability classes are never drawn."""
  cum = np.cumsum(probs, axis=1)
  v = u[:, None] * cum[:, -1:]
  return np.minimum((cum <= v).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


def transition_matrix_noise(
  labels: Any, num_classes: int, *, matrix: Any, seed: int, path: str | None = None
) -> tuple[np.ndarray, dict]:
  """Label noise from a user-given row-stochastic transition matrix: each example's noisy label is drawn
  independently from row ``T[y_i]``, ``P(noisy = j | true = i) = T[i, j]`` (the class-conditional noise model of
  Patrini et al. 2017).

  ``matrix``: a K x K array, or a path to a ``.npy``/``.csv`` file (:func:`load_transition_matrix`); validated by
  :func:`check_transition_matrix`. ``path`` (optional) is only recorded. The record holds the matrix as given
  (``params["matrix"]``), ``expected_rate = mean_i (1 - T[y_i, y_i])`` and the realised ``transition_counts``.
  """
  fn = "transition_matrix_noise"
  y = _check_labels(labels, num_classes, fn=fn)
  if isinstance(matrix, (str, os.PathLike)):
    path = os.fspath(matrix) if path is None else path
    matrix = load_transition_matrix(matrix)
  t = check_transition_matrix(matrix, num_classes, fn=fn)
  rng = np.random.default_rng(seed)
  u = rng.random(y.size)
  new = _sample_rows(t[y], u) if y.size else y.copy()
  params = {"matrix": t.tolist(), "path": None if path is None else str(path)}
  rec = _noise_record(
    "matrix", _PATRINI2017 + " (class-conditional noise, user-given T)", params, seed, y, new, num_classes
  )
  rec["expected_rate"] = float(np.mean(1.0 - t[y, y])) if y.size else 0.0
  return new, rec


# ---------------------------------------------------------------------------------------------------------------
# Instance-dependent noise
# ---------------------------------------------------------------------------------------------------------------


def _truncated_normal(rng: np.random.Generator, n: int, mean: float, std: float, low: float, high: float):
  """``n`` draws of N(mean, std^2) conditioned on [low, high], by rejection (redraw the rejected ones)."""
  if std == 0:
    return np.full(n, min(max(mean, low), high), dtype=np.float64)
  out = rng.normal(mean, std, size=n)
  bad = np.flatnonzero((out < low) | (out > high))
  while bad.size:
    out[bad] = rng.normal(mean, std, size=bad.size)
    bad = bad[(out[bad] < low) | (out[bad] > high)]
  return out


def _flat_features(x: Any, n: int, fn: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim < 1 or x.shape[0] != n:
    raise ValueError(f"{fn}: `x` must have one row per label ({n}), got shape {x.shape}")
  if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
    raise ValueError(f"{fn}: `x` must be numeric, got dtype {x.dtype}")
  return x.reshape(n, -1)


def _instance_rows(xc: np.ndarray, c: int, q: np.ndarray, w_c: np.ndarray) -> np.ndarray:
  """Rows ``P_i`` of Xia et al.'s generator for examples of true class ``c`` (features ``xc``, flip rates ``q``)."""
  with np.errstate(invalid="ignore", over="ignore"):  # non-finite features give NaN rows; the caller raises
    z = xc.astype(np.float64) @ w_c
    z[:, c] = -np.inf
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True) * q[:, None]
  p[:, c] = 1.0 - q
  return p


def instance_dependent_transition(
  x: Any, labels: Any, num_classes: int, *, flip_rates: Any, weights: Any
) -> np.ndarray:
  """Per-example transition rows of the instance-dependent generator of Xia et al. (2020, NeurIPS, Algorithm 2):

      z_i = x_i W_{y_i},   z_{i, y_i} = -inf,   P_i = q_i softmax(z_i),   P_{i, y_i} = 1 - q_i

  ``x``: features, one row per example (flattened to ``(n, d)``); ``flip_rates``: ``q`` of shape ``(n,)`` in
  [0, 1]; ``weights``: ``W`` of shape ``(K, d, K)`` (one ``d x K`` matrix per true class). Returns ``P`` of shape
  ``(n, K)`` (float64, rows sum to 1). Needs ``K >= 2``.
  """
  fn = "instance_dependent_transition"
  y = _check_labels(labels, num_classes, fn=fn)
  if num_classes < 2:
    raise ValueError(f"{fn}: `num_classes` must be >= 2, got {num_classes}")
  xf = _flat_features(x, y.size, fn)
  q = np.asarray(flip_rates, dtype=np.float64)
  if q.shape != y.shape or not np.all((q >= 0) & (q <= 1)):
    raise ValueError(f"{fn}: `flip_rates` must have shape {y.shape} with values in [0, 1]")
  w = np.asarray(weights, dtype=np.float64)
  if w.shape != (num_classes, xf.shape[1], num_classes):
    raise ValueError(
      f"{fn}: `weights` must have shape (K, d, K) = {(num_classes, xf.shape[1], num_classes)}, got {w.shape}"
    )
  out = np.zeros((y.size, num_classes), np.float64)
  for c in range(num_classes):
    idx = np.flatnonzero(y == c)
    if idx.size:
      out[idx] = _instance_rows(xf[idx], c, q[idx], w[c])
  if not np.all(np.isfinite(out)):
    raise ValueError(f"{fn}: `x` or `weights` give non-finite logits (non-finite inputs?)")
  return out


def instance_dependent_noise(
  x: Any,
  labels: Any,
  num_classes: int,
  *,
  rate: float,
  seed: int,
  std: float = 0.1,
  weights: Any = None,
  weights_seed: int | None = None,
  chunk_rows: int = 4096,
) -> tuple[np.ndarray, dict]:
  """Instance-dependent label noise, the generator of Xia et al. (2020, NeurIPS, "Part-dependent Label Noise",
  Algorithm 2 of its appendix, and their released code):

  1. per-example flip rates ``q_i ~ N(rate, std^2)`` truncated to [0, 1] (``std = 0.1`` in the paper);
  2. ``W_c ~ N(0, 1)`` of shape ``(d, K)``, one per true class ``c`` (``d`` = number of features of ``x``);
  3. ``P_i`` from :func:`instance_dependent_transition`: ``q_i softmax(x_i W_{y_i})`` off the true class (which is
     masked to -inf before the softmax), ``1 - q_i`` on it;
  4. the noisy label is drawn from ``P_i``.

  So the flip probability of example ``i`` is exactly ``q_i`` and ``E[flip] = E[q]``, ``rate`` away from the
  truncation. ``x`` is used as given, flattened per example (the authors feed raw pixel values as floats); the scale
  of ``x`` sets how peaked the softmax is. ``W`` is drawn from ``weights_seed`` (default: ``seed``; fix it to share
  one ``W`` between splits or runs) class by class, or given as ``weights`` of shape ``(K, d, K)``; ``q`` and the
  sampling use ``seed``.

  Returns ``(new_labels, record)``; the record adds ``flip_rates`` (mean, std, min, max of the drawn ``q``),
  ``expected_rate`` (mean ``q``) and ``expected_transition_matrix`` (per true class, the mean of ``P_i``; rows of
  classes with no example are 0), against which ``transition_counts`` can be compared.
  """
  fn = "instance_dependent_noise"
  y = _check_labels(labels, num_classes, fn=fn)
  r = _check_rate(rate, fn=fn)
  if num_classes < 2:
    raise ValueError(f"{fn}: `num_classes` must be >= 2, got {num_classes}")
  try:
    sd = float(std)
  except (TypeError, ValueError):
    raise ValueError(f"{fn}: `std` must be a number >= 0, got {std!r}") from None
  if not (np.isfinite(sd) and sd >= 0):
    raise ValueError(f"{fn}: `std` must be a finite number >= 0, got {std!r}")
  n = y.size
  xf = _flat_features(x, n, fn)
  d = xf.shape[1]
  if weights is not None:
    w_all = np.asarray(weights, dtype=np.float64)
    if w_all.shape != (num_classes, d, num_classes):
      raise ValueError(
        f"{fn}: `weights` must have shape (K, d, K) = {(num_classes, d, num_classes)}, got {w_all.shape}"
      )
  rng = np.random.default_rng(seed)
  q = _truncated_normal(rng, n, r, sd, 0.0, 1.0)
  u = rng.random(n)
  w_seed = int(seed) if weights_seed is None else int(weights_seed)
  w_rng = np.random.default_rng(derive_seed(w_seed, "instance_weights"))
  new = y.copy()
  expected = np.zeros((num_classes, num_classes), np.float64)
  for c in range(num_classes):
    w_c = w_all[c] if weights is not None else w_rng.standard_normal((d, num_classes))
    idx = np.flatnonzero(y == c)
    for lo in range(0, idx.size, max(1, int(chunk_rows))):
      part = idx[lo : lo + max(1, int(chunk_rows))]
      p = _instance_rows(xf[part], c, q[part], w_c)
      if not np.all(np.isfinite(p)):
        raise ValueError(f"{fn}: `x` gives non-finite logits x_i W_c for class {c} (non-finite features?)")
      expected[c] += p.sum(axis=0)
      new[part] = _sample_rows(p, u[part])
  counts = np.bincount(y, minlength=num_classes).astype(np.float64)
  expected = np.where(counts[:, None] > 0, expected / np.maximum(counts, 1.0)[:, None], 0.0)
  params = {
    "rate": r,
    "std": sd,
    "weights": "given" if weights is not None else "drawn",
    "weights_seed": None if weights is not None else w_seed,
    "num_features": int(d),
  }
  rec = _noise_record("instance", _XIA2020, params, seed, y, new, num_classes)
  rec["flip_rates"] = (
    {"mean": float(q.mean()), "std": float(q.std()), "min": float(q.min()), "max": float(q.max())}
    if n
    else {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
  )
  rec["expected_rate"] = float(q.mean()) if n else 0.0
  rec["expected_transition_matrix"] = expected.tolist()
  return new, rec


# ---------------------------------------------------------------------------------------------------------------
# Subsampling: long tails and small data
# ---------------------------------------------------------------------------------------------------------------


def long_tail_counts(num_classes: int, n_max: int, ratio: float, profile: str = "exp") -> list[int]:
  """Per-class target counts of a long-tailed profile (Cao et al. 2019, LDAM-DRW).

  * ``"exp"``: ``n_c = floor(n_max * ratio ** (-c / (K - 1)))`` for ``c = 0..K-1`` (so ``n_0 = n_max`` and
    ``n_{K-1} = floor(n_max / ratio)``).
  * ``"step"``: classes ``c < K // 2`` keep ``n_max``, the others get ``floor(n_max / ratio)``.

  Every class keeps at least one example. ``ratio`` (imbalance ratio n_max/n_min) must be >= 1.
  """
  try:
    ratio = float(ratio)
  except (TypeError, ValueError):
    raise ValueError(f"ratio must be a number >= 1, got {ratio!r}") from None
  if not ratio >= 1.0:
    raise ValueError(f"ratio must be >= 1, got {ratio!r}")
  if int(n_max) < 1:
    raise ValueError(f"n_max must be >= 1, got {n_max!r}")
  k = int(num_classes)
  if profile == "exp":
    if k == 1:
      return [int(n_max)]
    counts = [int(np.floor(n_max * ratio ** (-c / (k - 1)))) for c in range(k)]
  elif profile == "step":
    counts = [int(n_max) if c < k // 2 else int(np.floor(n_max / ratio)) for c in range(k)]
  else:
    raise ValueError(f"profile must be 'exp' or 'step', got {profile!r}")
  return [max(1, c) for c in counts]


def _choose_per_class(y: np.ndarray, targets: Sequence[int], rng: np.random.Generator) -> np.ndarray:
  keep = []
  for c, t in enumerate(targets):
    members = np.flatnonzero(y == c)
    if t:
      keep.append(rng.choice(members, size=int(t), replace=False))
  if not keep:
    return np.zeros(0, np.int64)
  return np.sort(np.concatenate(keep)).astype(np.int64)


def long_tail_indices(
  labels: Any, num_classes: int, *, ratio: float, seed: int, profile: str = "exp", n_max: int | None = None
) -> tuple[np.ndarray, dict]:
  """Indices (sorted) of a seeded long-tailed subset (Cao et al. 2019); see :func:`long_tail_counts`.

  ``n_max`` defaults to the *smallest* class count present (so every class can meet its target on balanced or
  near-balanced data such as a stratified split). A class with fewer examples than its target raises ValueError.
  Which examples are kept within a class is a seeded uniform choice without replacement.
  """
  y = _check_labels(labels, num_classes)
  counts = np.bincount(y, minlength=num_classes)
  if n_max is None:
    n_max = int(counts.min())
    if n_max < 1:
      raise ValueError("long_tail needs at least one example of every class (n_max would be 0)")
  targets = long_tail_counts(num_classes, int(n_max), ratio, profile)
  short = [c for c in range(num_classes) if targets[c] > counts[c]]
  if short:
    c = short[0]
    raise ValueError(f"n_max={n_max}: class {c} needs {targets[c]} examples but has {int(counts[c])}")
  idx = _choose_per_class(y, targets, np.random.default_rng(seed))
  params = {"ratio": float(ratio), "profile": profile, "n_max": int(n_max)}
  return idx, _subset_record("longtail", _CAO2019, params, seed, y, idx, num_classes, targets)


def small_data_indices(labels: Any, num_classes: int, *, n_per_class: int, seed: int) -> tuple[np.ndarray, dict]:
  """Indices (sorted) of a seeded subset with exactly ``n_per_class`` examples of every class.

  The small-data regime in which Generative Cross-Entropy is evaluated (Zhan, Zhou, Shen 2026). Raises ValueError
  naming ``n_per_class`` if some class has fewer examples.
  """
  y = _check_labels(labels, num_classes)
  if not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
    raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
  counts = np.bincount(y, minlength=num_classes)
  if counts.min() < n_per_class:
    c = int(np.argmin(counts))
    raise ValueError(f"n_per_class={n_per_class} larger than available: class {c} has {int(counts[c])}")
  targets = [int(n_per_class)] * num_classes
  idx = _choose_per_class(y, targets, np.random.default_rng(seed))
  params = {"n_per_class": int(n_per_class)}
  return idx, _subset_record(
    "small", "Zhan, Zhou, Shen 2026 (GenCE), small-data regime", params, seed, y, idx, num_classes, targets
  )


def _split_xy(data: Any) -> tuple[Any, np.ndarray]:
  if not (isinstance(data, (tuple, list)) and len(data) == 2):
    raise ValueError("data must be an (x, y) pair")
  x, y = data
  y = np.asarray(y)
  if x is not None and len(x) != len(y):
    raise ValueError(f"x and y lengths differ: {len(x)} vs {len(y)}")
  return x, y


def long_tail(
  data: tuple[Any, Any], num_classes: int, *, ratio: float, seed: int, profile: str = "exp", n_max: int | None = None
) -> tuple[tuple[Any, np.ndarray], dict]:
  """Long-tailed subsampling of an ``(x, y)`` pair (Cao et al. 2019); returns ``((x_new, y_new), record)``.

  See :func:`long_tail_indices`. ``x`` may be ``None``.
  """
  x, y = _split_xy(data)
  idx, rec = long_tail_indices(y, num_classes, ratio=ratio, seed=seed, profile=profile, n_max=n_max)
  return ((None if x is None else np.asarray(x)[idx]), np.asarray(y)[idx].astype(np.int64)), rec


def small_data(
  data: tuple[Any, Any], num_classes: int, *, n_per_class: int, seed: int
) -> tuple[tuple[Any, np.ndarray], dict]:
  """``n_per_class`` examples of each class of an ``(x, y)`` pair; returns ``((x_new, y_new), record)``."""
  x, y = _split_xy(data)
  idx, rec = small_data_indices(y, num_classes, n_per_class=n_per_class, seed=seed)
  return ((None if x is None else np.asarray(x)[idx]), np.asarray(y)[idx].astype(np.int64)), rec


# ---------------------------------------------------------------------------------------------------------------
# Regime objects and the spec parser
# ---------------------------------------------------------------------------------------------------------------

_LABEL_FNS: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {
  "symmetric": symmetric_noise,
  "symmetric_tm": transition_symmetric_noise,
  "symmetric_uniform": symmetric_uniform_noise,
  "pairflip": pair_flip_noise,
  "asym10": cifar10_asymmetric_noise,
  "asym100_superclass": cifar100_superclass_noise,
  "asym100_blocks": cifar100_block_noise,
  "matrix": transition_matrix_noise,
  "instance": instance_dependent_noise,
}
_SUBSET_FNS: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {
  "longtail": long_tail_indices,
  "small": small_data_indices,
}
#: Regimes whose labels are drawn per example (``:bernoulli``) or as an exact count (default).
_EXACT_OPTION = ("symmetric_uniform", "pairflip", "asym10", "asym100_superclass", "asym100_blocks")
_ALIASES = {
  "sym": "symmetric",
  "symmetric_exact": "symmetric",
  "transition": "symmetric_tm",
  "symmetric_transition": "symmetric_tm",
  "sym_tm": "symmetric_tm",
  "sym_uniform": "symmetric_uniform",
  "symmetric_dividemix": "symmetric_uniform",
  "pair": "pairflip",
  "pair_flip": "pairflip",
  "cifar10_asym": "asym10",
  "asym_cifar10": "asym10",
  "asymmetric10": "asym10",
  # ``asym100`` keeps meaning what it always meant here: the superclass map of Patrini et al.'s text.
  "asym100": "asym100_superclass",
  "cifar100_asym": "asym100_superclass",
  "asym_cifar100": "asym100_superclass",
  "asymmetric100": "asym100_superclass",
  "asym100_block": "asym100_blocks",
  "user_matrix": "matrix",
  "instance_dependent": "instance",
  "idn": "instance",
  "long_tail": "longtail",
  "lt": "longtail",
  "small_data": "small",
  "few": "small",
}


def _freeze(v: Any) -> Any:
  """Arrays and lists as nested tuples of floats, so a :class:`Regime` stays hashable and comparable."""
  if isinstance(v, (np.ndarray, list, tuple)):
    a = np.asarray(v, dtype=np.float64)
    return tuple(map(tuple, a.tolist())) if a.ndim == 2 else tuple(a.ravel().tolist())
  return v


@dataclasses.dataclass(frozen=True)
class Regime:
  """One configured regime: ``name`` (canonical, see module docstring; aliases are resolved) and keyword ``params``.

  ``kind`` is ``"labels"`` (label noise: returns new labels) or ``"subset"`` (returns kept indices).
  :meth:`indices_or_labels` is what :func:`gence_jax.data.load_dataset` calls; :meth:`__call__` applies the pure
  function in its public form (labels -> labels, ``(x, y)`` -> labels for ``instance``, or ``(x, y)`` -> ``(x, y)``
  for subsets). :meth:`transition_matrix` gives the class-level matrix a noise regime asks for.
  """

  name: str
  params: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    name = _ALIASES.get(self.name, self.name)
    if name not in _LABEL_FNS and name not in _SUBSET_FNS:
      raise ValueError(f"unknown regime {self.name!r}; known: {sorted([*_LABEL_FNS, *_SUBSET_FNS])}")
    object.__setattr__(self, "name", name)
    object.__setattr__(self, "params", tuple(sorted((k, _freeze(v)) for k, v in self.params)))
    if name == "instance" and "weights" in dict(self.params):
      raise ValueError(
        "Regime('instance'): takes rate, std and weights_seed; pass `weights` to instance_dependent_noise directly"
      )

  @classmethod
  def make(cls, name: str, **params: Any) -> "Regime":
    """``Regime.make("symmetric", rate=0.4)``; aliases accepted. ``Regime.make("matrix", matrix=T)`` takes a K x K
    array (or ``matrix="T.npy"``: the file is read now, and its path kept for :meth:`spec`)."""
    name = _ALIASES.get(name, name)
    if name == "matrix":
      m = params.get("matrix")
      if isinstance(m, (str, os.PathLike)):
        params = {**params, "path": params.get("path") or os.fspath(m), "matrix": load_transition_matrix(m)}
      if "matrix" not in params:
        raise ValueError("Regime.make('matrix'): needs `matrix` (a K x K array or a .npy/.csv path)")
      params["matrix"] = check_transition_matrix(params["matrix"], fn="Regime.make('matrix')")
      params.setdefault("path", None)
    return cls(name, tuple(sorted(params.items())))

  @property
  def kind(self) -> str:
    return "labels" if self.name in _LABEL_FNS else "subset"

  @property
  def needs_x(self) -> bool:
    """True for regimes that read the features as well as the labels (``instance``)."""
    return self.name == "instance"

  @property
  def kwargs(self) -> dict[str, Any]:
    return dict(self.params)

  def indices_or_labels(
    self, labels: np.ndarray, num_classes: int, *, seed: int, x: Any = None
  ) -> tuple[np.ndarray, dict]:
    """Noise regimes: ``(new_labels, record)``; subset regimes: ``(kept_indices, record)``.

    ``x`` (the split's inputs, one row per label) is read only by regimes with :attr:`needs_x` and ignored by the
    others, so a caller can always pass it; a ``needs_x`` regime without ``x`` raises ValueError.
    """
    if self.needs_x:
      if x is None:
        raise ValueError(
          f"regime {self.spec()!r} needs the features: call indices_or_labels(labels, num_classes, seed=..., x=x)"
        )
      return instance_dependent_noise(x, labels, num_classes, seed=seed, **self.kwargs)
    fn = _LABEL_FNS.get(self.name) or _SUBSET_FNS[self.name]
    return fn(labels, num_classes, seed=seed, **self.kwargs)

  def __call__(
    self, data: Any, num_classes: int, *, seed: int
  ) -> tuple[np.ndarray | tuple[np.ndarray | None, np.ndarray], dict]:
    if self.needs_x:
      x, y = _split_xy(data)
      return self.indices_or_labels(y, num_classes, seed=seed, x=x)
    if self.kind == "labels":
      return self.indices_or_labels(np.asarray(data), num_classes, seed=seed)
    x, y = _split_xy(data)
    idx, rec = self.indices_or_labels(y, num_classes, seed=seed)
    return ((None if x is None else np.asarray(x)[idx]), np.asarray(y)[idx].astype(np.int64)), rec

  def transition_matrix(self, num_classes: int) -> np.ndarray:
    """The K x K matrix ``T[i, j] = P(noisy = j | true = i)`` this noise regime asks for (float64).

    ``symmetric``/``symmetric_tm``: ``(1 - r) I + r/(K-1) (1 1^T - I)``; ``symmetric_uniform``:
    ``(1 - r) I + (r/K) 1 1^T``; the class maps (``pairflip``, ``asym10``, ``asym100_*``): ``1 - r`` on the diagonal
    of each source class and ``r`` at ``(c, map(c))``; ``matrix``: the matrix. Exact-count variants realise it per
    class up to rounding. ``instance`` has no class-level matrix (see its record's ``expected_transition_matrix``).
    """
    k = int(num_classes)
    p = self.kwargs
    if self.kind != "labels" or self.name == "instance":
      raise ValueError(f"Regime.transition_matrix: regime {self.name!r} has no class-level transition matrix")
    if self.name == "matrix":
      return check_transition_matrix(p["matrix"], k, fn="Regime.transition_matrix")
    r = float(p["rate"])
    eye = np.eye(k)
    if self.name in ("symmetric", "symmetric_tm"):
      return (1 - r) * eye + (r / (k - 1)) * (1 - eye) if k > 1 else eye
    if self.name == "symmetric_uniform":
      return (1 - r) * eye + r / k
    mapping = {
      "pairflip": lambda: {c: (c + 1) % k for c in range(k)},
      "asym10": lambda: CIFAR10_ASYMMETRIC_MAP,
      "asym100_superclass": cifar100_superclass_map,
      "asym100_blocks": cifar100_block_map,
    }[self.name]()
    t = eye.copy()
    for src, dst in mapping.items():
      if src != dst:
        t[src, src] -= r
        t[src, dst] += r
    return t

  def spec(self) -> str:
    """Spec-string form (inverse of :func:`parse_regimes` for one item)."""
    p = self.kwargs
    if self.name == "longtail":
      s = f"longtail:{p.get('profile', 'exp')}:{_fmt(p['ratio'])}"
      return s + (f":{p['n_max']}" if p.get("n_max") is not None else "")
    if self.name == "small":
      return f"small:{p['n_per_class']}"
    if self.name == "matrix":
      if p.get("path"):
        return f"matrix:{p['path']}"
      return "matrix:" + ";".join(" ".join(repr(float(v)) for v in row) for row in p["matrix"])
    if self.name == "instance":
      s = f"instance:{_fmt(p['rate'])}"
      std, ws = p.get("std", 0.1), p.get("weights_seed")
      if ws is not None or float(std) != 0.1:
        s += f":{_fmt(std)}"
      return s + (f":{int(ws)}" if ws is not None else "")
    s = f"{self.name}:{_fmt(p['rate'])}"
    return s + (":bernoulli" if p.get("exact") is False else "")


def _fmt(v: Any) -> str:
  f = float(v)
  return str(int(f)) if f.is_integer() else repr(f)


def _num(field: str, what: str, name: str) -> float:
  try:
    return float(field)
  except ValueError:
    raise ValueError(f"regime {name!r}: {what} must be a number, got {field!r}") from None


def _parse_matrix(item: str, arg: str) -> Regime:
  if arg.lower().endswith((".npy", ".csv")):
    return Regime.make("matrix", matrix=arg)
  try:
    rows = [[float(v) for v in row.split()] for row in arg.split(";")]
  except ValueError:
    raise ValueError(
      f"regime {item!r}: expected 'matrix:<file.npy|file.csv>' or an inline matrix such as 'matrix:0.8 0.2;0.3 0.7'"
    ) from None
  if len({len(r) for r in rows}) != 1:
    raise ValueError(f"regime {item!r}: inline matrix rows have different lengths {[len(r) for r in rows]}")
  return Regime.make("matrix", matrix=np.asarray(rows))


def _parse_one(item: str) -> Regime:
  fields = [f.strip() for f in item.split(":")]
  raw_name, args = fields[0].lower(), fields[1:]
  name = _ALIASES.get(raw_name, raw_name)
  if name == "matrix":
    if not args or not ":".join(args).strip():
      raise ValueError(f"regime {item!r}: expected 'matrix:<file.npy|file.csv>' or 'matrix:0.8 0.2;0.3 0.7'")
    return _parse_matrix(item, item.split(":", 1)[1].strip())
  if name == "instance":
    if not 1 <= len(args) <= 3:
      raise ValueError(f"regime {item!r}: expected 'instance:<rate>[:<std>[:<weights_seed>]]'")
    params: dict[str, Any] = {"rate": _check_rate(_num(args[0], "rate", raw_name))}
    if len(args) >= 2:
      std = _num(args[1], "std", raw_name)
      if not std >= 0:
        raise ValueError(f"regime {item!r}: std must be >= 0")
      params["std"] = std
    if len(args) == 3:
      ws = _num(args[2], "weights_seed", raw_name)
      if not ws.is_integer():
        raise ValueError(f"regime {item!r}: weights_seed must be an integer")
      params["weights_seed"] = int(ws)
    return Regime.make("instance", **params)
  if name in _LABEL_FNS:
    exact = True
    if args and args[-1].lower() in ("bernoulli", "exact"):
      exact = args.pop().lower() == "exact"
    if len(args) != 1:
      raise ValueError(f"regime {item!r}: expected '{raw_name}:<rate>'")
    rate = _check_rate(_num(args[0], "rate", raw_name))
    if not exact and name not in _EXACT_OPTION:
      raise ValueError(
        f"regime {item!r}: ':bernoulli' applies only to {'/'.join(_EXACT_OPTION)} "
        "(use symmetric_tm for per-example symmetric noise)"
      )
    params = {"rate": rate}
    if not exact:
      params["exact"] = False
    return Regime.make(name, **params)
  if name == "longtail":
    profile = "exp"
    if args and args[0].lower() in ("exp", "step"):
      profile = args.pop(0).lower()
    if len(args) not in (1, 2):
      raise ValueError(f"regime {item!r}: expected 'longtail:<exp|step>:<ratio>[:<n_max>]'")
    ratio = _num(args[0], "ratio", raw_name)
    if not ratio >= 1:
      raise ValueError(f"regime {item!r}: ratio must be >= 1")
    params = {"ratio": ratio, "profile": profile}
    if len(args) == 2:
      params["n_max"] = int(_num(args[1], "n_max", raw_name))
    return Regime.make("longtail", **params)
  if name == "small":
    if len(args) != 1:
      raise ValueError(f"regime {item!r}: expected 'small:<n_per_class>'")
    n = _num(args[0], "n_per_class", raw_name)
    if not (n.is_integer() and n >= 1):
      raise ValueError(f"regime {item!r}: n_per_class must be a positive integer")
    return Regime.make("small", n_per_class=int(n))
  raise ValueError(f"unknown regime {raw_name!r} in {item!r}; known: {sorted([*_LABEL_FNS, *_SUBSET_FNS, *_ALIASES])}")


def parse_regimes(spec: str | Regime | Sequence[str | Regime] | None) -> list[Regime]:
  """Parse a regime spec into a list of :class:`Regime`, applied in the given order.

  ``spec`` may be a string such as ``"symmetric:0.4,longtail:exp:100,small:20"`` (grammar in the module
  docstring), a single :class:`Regime`, a sequence mixing strings and :class:`Regime` objects, or ``None``/``""``
  (no regime). Unknown names and malformed fields raise ValueError; a ``matrix:<file>`` item is read (and
  validated) here, a missing file raises FileNotFoundError.

  Order matters: ``"longtail:exp:100,symmetric:0.4"`` subsamples by the clean labels and then corrupts 40% of
  what is left; ``"symmetric:0.4,longtail:exp:100"`` subsamples by the already-noisy labels.
  """
  if spec is None:
    return []
  if isinstance(spec, Regime):
    return [spec]
  if isinstance(spec, str):
    items = [s for s in (t.strip() for t in spec.split(",")) if s]
    return [_parse_one(s) for s in items]
  out: list[Regime] = []
  for s in spec:
    out.extend(parse_regimes(s))
  return out
