"""Host-side input pipeline in NumPy: splits, normalisation, CIFAR augmentation, batching and device placement.

Everything is deterministic given a seed: the training order of epoch ``e`` is a permutation drawn from
``(seed, e)``, and the augmentation of global batch ``b`` of epoch ``e`` from ``(seed, e, b)``, so a run resumed at
any step sees exactly the batches an uninterrupted run would see, and every process of a multi-host job sees its
slice of the same global batch (augmentation is drawn for the global batch and then sliced, so the result does not
depend on the number of processes).

Batches are dicts of NumPy arrays: ``{"x": ..., "label": int32, "mask": bool}``, with the inputs under ``"x"``
whatever their shape (images ``(N, H, W, C)``, tabular features ``(N, D)``), optionally ``"index"`` (int64 row index
into the split, ``-1`` on padding rows). Evaluation batches never drop an example: the last one is
padded to the full batch size and its ``mask`` marks the real rows.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

from gence_jax.data.regimes import derive_seed

if TYPE_CHECKING:
  from jax.sharding import NamedSharding

__all__ = [
  "Normalizer",
  "compute_normalizer",
  "stratified_split",
  "random_split",
  "crop_flip_params",
  "apply_crop_flip",
  "random_crop_flip",
  "local_batch_slice",
  "train_batches",
  "eval_batches",
  "steps_per_epoch",
  "num_eval_batches",
  "batch_sharding",
  "to_device",
  "prefetch_to_device",
]

# ---------------------------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------------------------


def random_split(n: int, fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Seeded split of ``range(n)`` into (keep, held_out) sorted index arrays, ``round(fraction * n)`` held out."""
  if not (0.0 <= float(fraction) < 1.0):
    raise ValueError(f"fraction must lie in [0, 1), got {fraction!r}")
  m = int(round(fraction * n))
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[m:]), np.sort(perm[:m])


def stratified_split(labels: Any, fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Seeded stratified split: returns sorted ``(keep_idx, held_out_idx)``.

  The held-out set has exactly ``round(fraction * n)`` examples. Per class, ``floor(fraction * n_c)`` are held
  out, and the remaining quota goes to the classes with the largest fractional parts (largest-remainder
  apportionment, ties broken by a seeded random order), so every class is represented in proportion up to one
  example. Within a class the held-out examples are a seeded uniform choice.
  """
  y = np.asarray(labels).astype(np.int64)
  if not (0.0 <= float(fraction) < 1.0):
    raise ValueError(f"val_fraction must lie in [0, 1), got {fraction!r}")
  n = y.size
  m = int(round(fraction * n))
  if m == 0:
    return np.arange(n), np.zeros(0, np.int64)
  rng = np.random.default_rng(seed)
  classes, inv = np.unique(y, return_inverse=True)
  counts = np.bincount(inv)
  exact = fraction * counts
  take = np.floor(exact).astype(np.int64)
  rest = m - int(take.sum())
  if rest > 0:
    order = np.lexsort((rng.permutation(classes.size), -(exact - take)))
    # Only classes that still have spare examples can take one more.
    order = [c for c in order if take[c] < counts[c]]
    take[np.asarray(order[:rest], dtype=np.int64)] += 1
  elif rest < 0:  # cannot happen with floor, kept for safety
    raise AssertionError("stratified split apportionment error")
  held = []
  for ci in range(classes.size):
    members = np.flatnonzero(inv == ci)
    if take[ci]:
      held.append(rng.choice(members, size=int(take[ci]), replace=False))
  held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
  keep_mask = np.ones(n, bool)
  keep_mask[held_idx] = False
  return np.flatnonzero(keep_mask), held_idx


# ---------------------------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """``(x - mean) / std`` per channel (images, last axis) or per feature (tabular), in float32.

  Built from *training* statistics by :func:`compute_normalizer`.
  """

  mean: np.ndarray
  std: np.ndarray

  def __call__(self, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8 and x.ndim >= 2 and x.size > 4096 and np.size(self.mean) == np.size(self.std) == x.shape[-1]:
      # Same float32 arithmetic, tabulated once for the 256 possible values of each channel: a lookup is
      # about twice as fast as converting and scaling.
      lut = self._lut
      return np.stack([np.take(lut[ch], x[..., ch]) for ch in range(x.shape[-1])], axis=-1)
    out = x.astype(np.float32)  # always a copy: the input is never modified
    np.subtract(out, self._mean32, out=out)
    np.multiply(out, self._inv_std32, out=out)
    return out

  @functools.cached_property
  def _mean32(self) -> np.ndarray:
    return np.asarray(self.mean, np.float32)

  @functools.cached_property
  def _inv_std32(self) -> np.ndarray:
    return (1.0 / np.asarray(self.std, np.float64)).astype(np.float32)

  @functools.cached_property
  def _lut(self) -> np.ndarray:
    # (C, 256): row c is channel c's table, contiguous for np.take.
    v = np.broadcast_to(np.arange(256, dtype=np.float32)[:, None], (256, np.size(self.mean))).copy()
    np.subtract(v, self._mean32.reshape(-1), out=v)
    np.multiply(v, self._inv_std32.reshape(-1), out=v)
    return np.ascontiguousarray(v.T)

  def apply_jax(self, x: Any) -> Any:
    """The same normalisation with ``jax.numpy``, for use inside a jitted step on uint8 batches moved to the
    device as they are (4x less to transfer than float32, and no host time spent normalising)."""
    import jax.numpy as jnp

    return (jnp.asarray(x).astype(jnp.float32) - jnp.asarray(self._mean32)) * jnp.asarray(self._inv_std32)

  def to_dict(self) -> dict[str, list[float]]:
    return {"mean": [float(v) for v in np.ravel(self.mean)], "std": [float(v) for v in np.ravel(self.std)]}


def compute_normalizer(x_train: np.ndarray, *, eps: float = 1e-8, chunk: int = 4096) -> Normalizer:
  """Mean and standard deviation of ``x_train`` over all axes but the last (channels / features), in float64.

  Images ``(N, H, W, C)``: per-channel statistics over all training pixels; tabular ``(N, D)``: per-feature
  standardisation. Computed in chunks of ``chunk`` examples (two passes: mean, then centred squares), so a
  uint8 CIFAR train set is never copied to float64 whole. Channels/features with ``std <= eps`` (e.g. digit pixels
  that are always 0) get ``std = 1`` so they map to 0 instead of dividing by zero. Pass only the TRAIN split.
  """
  x = np.asarray(x_train)
  if x.ndim < 2 or x.shape[0] == 0:
    raise ValueError(f"x_train must have shape (N, ..., C) with N > 0, got {x.shape}")
  c = x.shape[-1]
  count = x.size // c
  total = np.zeros(c, np.float64)
  for i in range(0, x.shape[0], chunk):
    total += x[i : i + chunk].reshape(-1, c).sum(axis=0, dtype=np.float64)
  mean = total / count
  sq = np.zeros(c, np.float64)
  for i in range(0, x.shape[0], chunk):
    d = x[i : i + chunk].reshape(-1, c).astype(np.float64) - mean
    sq += np.einsum("ij,ij->j", d, d)
  std = np.sqrt(sq / count)
  std = np.where(std > eps, std, 1.0)
  return Normalizer(mean=mean, std=std)


# ---------------------------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------------------------


def crop_flip_params(
  rng: np.random.Generator, n: int, *, pad: int = 4, flip: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Draw per-example crop offsets ``dy, dx`` in ``[0, 2 * pad]`` and flip flags (in that order from ``rng``)."""
  dy = rng.integers(0, 2 * pad + 1, size=n)
  dx = rng.integers(0, 2 * pad + 1, size=n)
  f = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
  return dy, dx, f


def apply_crop_flip(
  images: np.ndarray, dy: np.ndarray, dx: np.ndarray, flip: np.ndarray, *, pad: int = 4
) -> np.ndarray:
  """Zero-pad by ``pad`` pixels, crop ``H x W`` at offset ``(dy, dx)`` of the padded image, then mirror
  horizontally where ``flip``; vectorised over the batch (no per-example Python loop):

  ``out[n, i, j] = padded[n, dy[n] + i, dx[n] + (W - 1 - j if flip[n] else j)]``.

  Implementation: flipped images are mirrored *before* zero padding (padding is symmetric, so cropping the padded
  mirror at column offset ``2 * pad - dx`` equals mirroring the crop at ``dx``); the crop is then one gather of
  contiguous ``W * C`` row segments from a strided window view of the padded batch (``sliding_window_view`` over
  rows and flattened ``W * C`` columns, indexed at ``(n, dy, dx * C)``).
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be (N, H, W, C), got {images.shape}")
  n, h, w, c = images.shape
  dy, dx, flip = np.asarray(dy), np.asarray(dx), np.asarray(flip, dtype=bool)
  if dy.shape != (n,) or dx.shape != (n,) or flip.shape != (n,):
    raise ValueError("dy, dx and flip must have one entry per image")
  if np.any((dy < 0) | (dy > 2 * pad) | (dx < 0) | (dx > 2 * pad)):
    raise ValueError(f"crop offsets must lie in [0, {2 * pad}]")
  hp, wp = h + 2 * pad, w + 2 * pad
  padded = np.zeros((n, hp, wp, c), images.dtype)
  padded[:, pad : pad + h, pad : pad + w] = images
  if flip.any():
    padded[flip, pad : pad + h, pad : pad + w] = images[flip, :, ::-1]
  ox = np.where(flip, 2 * pad - dx, dx)
  windows = np.lib.stride_tricks.sliding_window_view(padded.reshape(n, hp, wp * c), (h, w * c), axis=(1, 2))
  return windows[np.arange(n), dy, ox * c].reshape(n, h, w, c)


def random_crop_flip(
  images: np.ndarray, rng: np.random.Generator | int, *, pad: int = 4, flip: bool = True
) -> np.ndarray:
  """Standard CIFAR augmentation (He et al. 2016, "Deep Residual Learning"): 4-pixel zero padding, random
  crop back to the original size, random horizontal flip with probability 1/2. Seeded by ``rng``."""
  rng = np.random.default_rng(rng)
  dy, dx, f = crop_flip_params(rng, len(images), pad=pad, flip=flip)
  return apply_crop_flip(images, dy, dx, f, pad=pad)


def _augment_spec(augment: Any) -> tuple[int, bool] | Callable | None:
  """Normalise an augmentation spec: None/'none', 'crop_flip' (CIFAR), 'crop' (no flip), or a callable
  ``fn(images, rng) -> images`` applied to the local batch."""
  if augment is None or augment is False or augment == "none":
    return None
  if augment is True or augment in ("crop_flip", "cifar"):
    return (4, True)
  if augment == "crop":
    return (4, False)
  if augment == "flip":
    return (0, True)
  if callable(augment):
    return augment
  raise ValueError(f"augment must be None, 'none', 'crop_flip', 'crop', 'flip' or a callable, got {augment!r}")


# ---------------------------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------------------------


def _resolve_process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not (0 <= process_index < process_count):
    raise ValueError(f"process_index must lie in [0, process_count={process_count}), got {process_index}")
  return int(process_index), int(process_count)


def local_batch_slice(global_batch_size: int, process_index: int, process_count: int) -> slice:
  """Rows of a global batch that process ``process_index`` of ``process_count`` reads: the contiguous block
  ``[p * B/P, (p + 1) * B/P)``. ``B`` must divide by ``P`` (ValueError naming ``batch_size`` otherwise)."""
  if global_batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {global_batch_size}")
  if global_batch_size % process_count:
    raise ValueError(f"batch_size={global_batch_size} (global) must be divisible by process_count={process_count}")
  local = global_batch_size // process_count
  return slice(process_index * local, (process_index + 1) * local)


def _split_rows(
  x: Any, y: Any, batch_size: int, process_index: int | None, process_count: int | None
) -> tuple[np.ndarray, np.ndarray, int, slice]:
  """``(x, y, n, rows)`` for an iterator over a split: the arrays, their number of examples (ValueError when ``x``
  and ``y`` differ in length) and the rows of each global batch this process reads (:func:`local_batch_slice`)."""
  x = np.asarray(x)
  y = np.asarray(y)
  n = len(y)
  if len(x) != n:
    raise ValueError(f"x and y lengths differ: {len(x)} vs {n}")
  pi, pc = _resolve_process(process_index, process_count)
  return x, y, n, local_batch_slice(batch_size, pi, pc)


def steps_per_epoch(n: int, batch_size: int, drop_remainder: bool = True) -> int:
  """Number of global batches per epoch."""
  return n // batch_size if drop_remainder else -(-n // batch_size)


def num_eval_batches(n: int, batch_size: int) -> int:
  """Number of (padded) evaluation batches: ``ceil(n / batch_size)``."""
  return -(-n // batch_size)


def _make_batch(
  x: np.ndarray,
  y: np.ndarray,
  idx: np.ndarray,
  valid: np.ndarray,
  *,
  normalizer: Normalizer | None,
  aug: Any,
  aug_rng: np.random.Generator | None,
  global_rows: slice,
  with_index: bool,
) -> dict[str, np.ndarray]:
  """Gather rows ``idx`` (only the local slice of the global batch), pad invalid rows, augment, normalise."""
  gidx = idx  # global-batch indices into the split (padding rows hold 0)
  local = gidx[global_rows]
  local_valid = valid[global_rows]
  xb = x[local]
  yb = y[local].astype(np.int32)
  if not local_valid.all():
    xb = xb.copy()
    xb[~local_valid] = 0
    yb[~local_valid] = 0
  if aug is not None:
    if callable(aug):
      xb = aug(xb, aug_rng)
    else:
      pad, flip = aug
      dy, dx, f = crop_flip_params(aug_rng, idx.size, pad=pad, flip=flip)  # drawn for the GLOBAL batch
      xb = apply_crop_flip(xb, dy[global_rows], dx[global_rows], f[global_rows], pad=pad)
  if normalizer is not None:
    xb = normalizer(xb)
    if not local_valid.all():
      xb[~local_valid] = 0.0
  batch = {"x": xb, "label": yb, "mask": local_valid.copy()}
  if with_index:
    batch["index"] = np.where(local_valid, local, -1).astype(np.int64)
  return batch


def _ordered(make: Callable[[Any], dict], jobs: Iterator[Any], num_workers: int) -> Iterator[dict]:
  """``make(job)`` for each job, in order; with ``num_workers > 0`` computed ahead by a thread pool (NumPy
  releases the GIL in its copies and gathers, so threads give real parallelism), at most ``2 * num_workers``
  batches ahead."""
  if num_workers <= 0:
    for job in jobs:
      yield make(job)
    return
  from concurrent.futures import ThreadPoolExecutor

  ahead = 2 * num_workers
  with ThreadPoolExecutor(num_workers, thread_name_prefix="gence_data") as ex:
    queue: collections.deque = collections.deque()
    try:
      for job in jobs:
        queue.append(ex.submit(make, job))
        if len(queue) >= ahead:
          yield queue.popleft().result()
      while queue:
        yield queue.popleft().result()
    finally:
      for f in queue:
        f.cancel()


def train_batches(
  x: np.ndarray,
  y: np.ndarray,
  *,
  batch_size: int,
  seed: int,
  num_epochs: int | None = None,
  start_step: int = 0,
  drop_remainder: bool = True,
  augment: Any = None,
  normalizer: Normalizer | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  with_index: bool = False,
  num_workers: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """Training iterator over ``(x, y)``: yields this process's part of each *global* batch of ``batch_size``.

  * Epoch ``e`` visits the examples in ``default_rng(derive_seed(seed, "shuffle", e)).permutation(n)``.
  * ``drop_remainder=True`` (default): ``n // batch_size`` full batches per epoch; otherwise the last batch of the
    epoch is padded to the full size, with ``mask`` False on padding rows.
  * ``augment``: ``None``, ``"crop_flip"`` (CIFAR: pad 4 + random crop + flip), ``"crop"``, ``"flip"`` or
    ``fn(images, rng) -> images``; drawn from ``derive_seed(seed, "augment", e, b)`` for global batch ``b`` of epoch
    ``e`` (for the built-in modes, for the whole global batch before slicing: process-count independent).
  * ``normalizer``: applied after augmentation (so padding pixels are black before normalisation, as in the
    usual torchvision recipe); output float32. Without it the input dtype is kept (uint8 images are 4x cheaper
    to move to the device; normalise there with :meth:`Normalizer.apply_jax` inside the jitted step).
  * ``num_epochs=None`` iterates forever; ``start_step`` skips that many global batches (for resuming).
  * ``process_index``/``process_count`` default to ``jax.process_index()``/``jax.process_count()``; each process
    gets ``batch_size // process_count`` rows (see :func:`local_batch_slice`).
  * ``num_workers > 0``: batches are prepared ahead by that many threads; the output is identical (every batch is
    a pure function of ``(seed, epoch, batch)``).
  """
  x, y, n, rows = _split_rows(x, y, batch_size, process_index, process_count)
  spe = steps_per_epoch(n, batch_size, drop_remainder)
  if spe == 0:
    raise ValueError(f"batch_size={batch_size} larger than the {n} training examples with drop_remainder=True")
  aug = _augment_spec(augment)

  def jobs() -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    step = int(start_step)
    while num_epochs is None or step < num_epochs * spe:
      epoch, b = divmod(step, spe)
      perm = np.random.default_rng(derive_seed(seed, "shuffle", epoch)).permutation(n)
      while b < spe and (num_epochs is None or step < num_epochs * spe):
        idx = perm[b * batch_size : (b + 1) * batch_size]
        valid = np.ones(batch_size, bool)
        if idx.size < batch_size:
          valid[idx.size :] = False
          idx = np.concatenate([idx, np.zeros(batch_size - idx.size, idx.dtype)])
        yield epoch, b, idx, valid
        b += 1
        step += 1

  def make(job: tuple[int, int, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    epoch, b, idx, valid = job
    aug_rng = np.random.default_rng(derive_seed(seed, "augment", epoch, b)) if aug is not None else None
    return _make_batch(
      x,
      y,
      idx,
      valid,
      normalizer=normalizer,
      aug=aug,
      aug_rng=aug_rng,
      global_rows=rows,
      with_index=with_index,
    )

  return _ordered(make, jobs(), num_workers)


def eval_batches(
  x: np.ndarray,
  y: np.ndarray,
  *,
  batch_size: int,
  normalizer: Normalizer | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  with_index: bool = False,
  num_workers: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """Evaluation iterator: every example exactly once, in order, in ``ceil(n / batch_size)`` global batches.

  The last global batch is padded with zero rows to ``batch_size``; ``mask`` (bool) is True exactly on real rows,
  so masked metrics see each example once. Every process yields the same number of batches (needed for
  collectives); with several processes, process ``p`` gets rows :func:`local_batch_slice` of each global batch.
  ``num_workers`` as in :func:`train_batches`.
  """
  x, y, n, rows = _split_rows(x, y, batch_size, process_index, process_count)

  def make(b: int) -> dict[str, np.ndarray]:
    idx = np.arange(b * batch_size, (b + 1) * batch_size)
    valid = idx < n
    idx = np.where(valid, idx, 0)
    return _make_batch(
      x, y, idx, valid, normalizer=normalizer, aug=None, aug_rng=None, global_rows=rows, with_index=with_index
    )

  return _ordered(make, iter(range(num_eval_batches(n, batch_size))), num_workers)


# ---------------------------------------------------------------------------------------------------------------
# Device placement
# ---------------------------------------------------------------------------------------------------------------


def batch_sharding(mesh: Any = None, axis: str = "data") -> NamedSharding:
  """A ``NamedSharding`` that splits the leading (batch) axis over ``axis`` of ``mesh``.

  Without ``mesh``, a 1-D mesh over all devices (``jax.devices()``) named ``axis`` is built.
  """
  import jax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  if mesh is None:
    mesh = Mesh(np.asarray(jax.devices()), (axis,))
  return NamedSharding(mesh, PartitionSpec(axis))


def to_device(batch: Mapping[str, np.ndarray], sharding: Any = None) -> dict[str, Any]:
  """Place a process-local NumPy batch on devices as global ``jax.Array``s.

  ``sharding`` (a ``jax.sharding.Sharding``, default :func:`batch_sharding`) describes the *global* array; each
  process passes its local rows and ``jax.make_array_from_process_local_data`` assembles the global batch (for one
  process this is a plain sharded ``device_put``). The local batch size must divide by the number of local
  devices the batch axis is split over.
  """
  import jax

  if sharding is None:
    sharding = batch_sharding()
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def prefetch_to_device(
  iterator: Iterator[Mapping[str, np.ndarray]], size: int = 2, sharding: Any = None
) -> Iterator[dict[str, Any]]:
  """Keep ``size`` batches in flight on device: transfers are asynchronous, so the host prepares batch ``t+1``
  while the device computes on batch ``t``."""
  queue: collections.deque = collections.deque()
  it = iter(iterator)
  for batch in it:
    queue.append(to_device(batch, sharding))
    if len(queue) >= size:
      break
  while queue:
    out = queue.popleft()
    for batch in it:
      queue.append(to_device(batch, sharding))
      break
    yield out
