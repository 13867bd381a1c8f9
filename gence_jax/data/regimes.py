"""Data regimes: label noise, long tails and small data, each seeded and self-recording.

Every regime is a *pure* NumPy function. Label-noise regimes take the label vector,

    new_labels, record = symmetric_noise(labels, num_classes, rate=0.4, seed=0)

and subsampling regimes take an ``(x, y)`` pair (``x`` may be any array with the same leading length, e.g. example ids)

    (x_new, y_new), record = long_tail((x, y), num_classes, ratio=100, seed=0)

(``long_tail_indices`` / ``small_data_indices`` return the kept indices instead). ``record`` is a JSON-serialisable
dict of what was *realised*: the parameters, the seed, the number of examples flipped / kept, the realised noise rate
and the per-class counts before and after. The same arguments always give the same result.

For configs and command lines, :func:`parse_regimes` turns a spec string such as
``"symmetric:0.4,longtail:exp:100,small:20"`` into a list of :class:`Regime` objects, which
:func:`gence_jax.data.load_dataset` applies in order to the training and validation splits (never to the test split).

Spec grammar (comma-separated items, each ``name:arg:arg...``; whitespace ignored):

==================================  ====================================================================
``symmetric:<rate>``                exact-count symmetric noise (Ma et al. 2020), :func:`symmetric_noise`
``symmetric_tm:<rate>``             transition-matrix symmetric noise (per-example Bernoulli),
                                    :func:`transition_symmetric_noise` (alias ``transition:<rate>``)
``pairflip:<rate>``                 pair flip c -> c+1 mod K (Han et al. 2018), :func:`pair_flip_noise`
``asym10:<rate>``                   CIFAR-10 asymmetric (Patrini et al. 2017), :func:`cifar10_asymmetric_noise`
                                    (alias ``cifar10_asym``)
``asym100:<rate>``                  CIFAR-100 within-superclass asymmetric, :func:`cifar100_asymmetric_noise`
                                    (alias ``cifar100_asym``)
``longtail:<exp|step>:<ratio>``     long-tailed subsampling (Cao et al. 2019), :func:`long_tail`;
                                    ``longtail:<ratio>`` means ``exp``; an optional 4th field is ``n_max``
``small:<n>``                       ``n`` examples per class, :func:`small_data` (alias ``small_data``)
==================================  ====================================================================

Rates must lie in [0, 1); the asymmetric and pair-flip regimes also accept the keyword ``:bernoulli`` as last field
(per-example coin flips instead of an exact count per class).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = [
  "CIFAR10_ASYMMETRIC_MAP",
  "CIFAR100_SUPERCLASSES",
  "CIFAR100_SUPERCLASS_NAMES",
  "CIFAR100_FINE_TO_COARSE",
  "Regime",
  "cifar100_asymmetric_map",
  "class_map_noise",
  "symmetric_noise",
  "transition_symmetric_noise",
  "pair_flip_noise",
  "cifar10_asymmetric_noise",
  "cifar100_asymmetric_noise",
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


def cifar100_asymmetric_map() -> dict[int, int]:
  """Map each CIFAR-100 fine class to the next fine class (by id) of its superclass, circularly.

  This is the CIFAR-100 asymmetric noise of Patrini et al. (2017), as used by Ma et al. (2020).
  """
  out: dict[int, int] = {}
  for fines in CIFAR100_SUPERCLASSES:
    for j, f in enumerate(fines):
      out[f] = fines[(j + 1) % len(fines)]
  return out


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


def _check_labels(labels: Any, num_classes: int, name: str = "labels") -> np.ndarray:
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
  y = np.asarray(labels)
  if y.ndim != 1:
    raise ValueError(f"{name} must be a 1-D integer array, got shape {y.shape}")
  if y.size and not np.issubdtype(y.dtype, np.integer):
    if not np.all(np.equal(np.mod(y, 1), 0)):
      raise ValueError(f"{name} must be integers, got dtype {y.dtype}")
  y = y.astype(np.int64)
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f"{name} out of range [0, {num_classes}): min {int(y.min())}, max {int(y.max())}")
  return y


def _check_rate(rate: float, name: str = "rate") -> float:
  try:
    r = float(rate)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number in [0, 1), got {rate!r}") from None
  if not (0.0 <= r < 1.0):
    raise ValueError(f"{name} must lie in [0, 1), got {rate!r}")
  return r


def _counts(y: np.ndarray, num_classes: int) -> list[int]:
  return [int(c) for c in np.bincount(y, minlength=num_classes)]


def _noise_record(
  name: str, paper: str, params: dict, seed: int, y_old: np.ndarray, y_new: np.ndarray, num_classes: int
) -> dict:
  flipped = y_old != y_new
  n = int(y_old.size)
  per_class = np.bincount(y_old[flipped], minlength=num_classes)
  return {
    "regime": name,
    "paper": paper,
    "params": dict(params),
    "seed": int(seed),
    "num_classes": int(num_classes),
    "n": n,
    "num_flipped": int(flipped.sum()),
    "realised_rate": float(flipped.mean()) if n else 0.0,
    "flipped_per_class": [int(c) for c in per_class],
    "class_counts_before": _counts(y_old, num_classes),
    "class_counts_after": _counts(y_new, num_classes),
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
    "regime": name,
    "paper": paper,
    "params": dict(params),
    "seed": int(seed),
    "num_classes": int(num_classes),
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


def cifar100_asymmetric_noise(
  labels: Any, num_classes: int = 100, *, rate: float, seed: int, exact: bool = True
) -> tuple[np.ndarray, dict]:
  """CIFAR-100 asymmetric noise (Patrini et al. 2017; Ma et al. 2020): each fine class flips to the next fine
  class of its superclass, circularly (superclass table :data:`CIFAR100_SUPERCLASSES`, Krizhevsky 2009)."""
  if num_classes != 100:
    raise ValueError(f"num_classes must be 100 for CIFAR-100 asymmetric noise, got {num_classes}")
  return class_map_noise(
    labels,
    100,
    mapping=cifar100_asymmetric_map(),
    rate=rate,
    seed=seed,
    exact=exact,
    name="asym100",
    paper=_PATRINI2017,
  )


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
  "pairflip": pair_flip_noise,
  "asym10": cifar10_asymmetric_noise,
  "asym100": cifar100_asymmetric_noise,
}
_SUBSET_FNS: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {
  "longtail": long_tail_indices,
  "small": small_data_indices,
}
_ALIASES = {
  "sym": "symmetric",
  "symmetric_exact": "symmetric",
  "transition": "symmetric_tm",
  "symmetric_transition": "symmetric_tm",
  "sym_tm": "symmetric_tm",
  "pair": "pairflip",
  "pair_flip": "pairflip",
  "cifar10_asym": "asym10",
  "asym_cifar10": "asym10",
  "asymmetric10": "asym10",
  "cifar100_asym": "asym100",
  "asym_cifar100": "asym100",
  "asymmetric100": "asym100",
  "long_tail": "longtail",
  "lt": "longtail",
  "small_data": "small",
  "few": "small",
}


@dataclasses.dataclass(frozen=True)
class Regime:
  """One configured regime: ``name`` (canonical, see module docstring) and keyword ``params``.

  ``kind`` is ``"labels"`` (label noise: returns new labels) or ``"subset"`` (returns kept indices).
  :meth:`indices_or_labels` is what :func:`gence_jax.data.load_dataset` calls; :meth:`__call__` applies the pure
  function in its public form (labels -> labels, or ``(x, y)`` -> ``(x, y)``).
  """

  name: str
  params: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    if self.name not in _LABEL_FNS and self.name not in _SUBSET_FNS:
      raise ValueError(f"unknown regime {self.name!r}; known: {sorted([*_LABEL_FNS, *_SUBSET_FNS])}")

  @classmethod
  def make(cls, name: str, **params: Any) -> "Regime":
    """``Regime.make("symmetric", rate=0.4)``; aliases accepted."""
    name = _ALIASES.get(name, name)
    return cls(name, tuple(sorted(params.items())))

  @property
  def kind(self) -> str:
    return "labels" if self.name in _LABEL_FNS else "subset"

  @property
  def kwargs(self) -> dict[str, Any]:
    return dict(self.params)

  def indices_or_labels(self, labels: np.ndarray, num_classes: int, *, seed: int) -> tuple[np.ndarray, dict]:
    """Noise regimes: ``(new_labels, record)``; subset regimes: ``(kept_indices, record)``."""
    fn = _LABEL_FNS.get(self.name) or _SUBSET_FNS[self.name]
    return fn(labels, num_classes, seed=seed, **self.kwargs)

  def __call__(self, data: Any, num_classes: int, *, seed: int):
    if self.kind == "labels":
      return self.indices_or_labels(np.asarray(data), num_classes, seed=seed)
    x, y = _split_xy(data)
    idx, rec = self.indices_or_labels(y, num_classes, seed=seed)
    return ((None if x is None else np.asarray(x)[idx]), np.asarray(y)[idx].astype(np.int64)), rec

  def spec(self) -> str:
    """Spec-string form (inverse of :func:`parse_regimes` for one item)."""
    p = self.kwargs
    if self.name == "longtail":
      s = f"longtail:{p.get('profile', 'exp')}:{_fmt(p['ratio'])}"
      return s + (f":{p['n_max']}" if p.get("n_max") is not None else "")
    if self.name == "small":
      return f"small:{p['n_per_class']}"
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


def _parse_one(item: str) -> Regime:
  fields = [f.strip() for f in item.split(":")]
  raw_name, args = fields[0].lower(), fields[1:]
  name = _ALIASES.get(raw_name, raw_name)
  if name in _LABEL_FNS:
    exact = True
    if args and args[-1].lower() in ("bernoulli", "exact"):
      exact = args.pop().lower() == "exact"
    if len(args) != 1:
      raise ValueError(f"regime {item!r}: expected '{raw_name}:<rate>'")
    rate = _check_rate(_num(args[0], "rate", raw_name))
    if not exact and name in ("symmetric", "symmetric_tm"):
      raise ValueError(
        f"regime {item!r}: ':bernoulli' applies only to pairflip/asym10/asym100 "
        "(use symmetric_tm for per-example symmetric noise)"
      )
    params: dict[str, Any] = {"rate": rate}
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
  (no regime). Unknown names and malformed fields raise ValueError.

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
