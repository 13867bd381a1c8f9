"""Long-tail losses and metrics against independent float64 NumPy references.

Each reference is written here from the paper's equation (see the docstrings in gence_jax/losses/longtail.py and
gence_jax/metrics/_longtail.py), in NumPy float64, without calling jax or the library's helpers. Gradients are
compared with central differences of those references.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _numerics import central_difference
from sklearn.metrics import balanced_accuracy_score

import gence_jax.losses as L
from gence_jax import metrics as M

COUNTS5 = (500, 120, 40, 9, 2)  # a long tail over 5 classes
COUNTS4 = (300, 60, 8, 1)

# ----------------------------------------------------------------------------------------------------------------
# NumPy float64 references.
# ----------------------------------------------------------------------------------------------------------------


def np_log_softmax(v):
  v = np.asarray(v, np.float64)
  m = v.max(-1, keepdims=True)
  return v - m - np.log(np.exp(v - m).sum(-1, keepdims=True))


def np_pick(a, y):
  return np.take_along_axis(a, np.asarray(y)[..., None], axis=-1)[..., 0]


def ref_logit_adjusted(z, y, counts, tau=1.0):
  n = np.asarray(counts, np.float64)
  return -np_pick(np_log_softmax(np.asarray(z, np.float64) + tau * np.log(n / n.sum())), y)


def ref_balanced_softmax(z, y, counts):
  # -log( n_y e^{z_y} / sum_c n_c e^{z_c} ), each row shifted by its max logit
  z = np.asarray(z, np.float64)
  n = np.asarray(counts, np.float64)
  e = n * np.exp(z - z.max(-1, keepdims=True))
  return -np.log(np_pick(e, y) / e.sum(-1))


def ref_cb_weights(counts, beta):
  n = np.asarray(counts, np.float64)
  w = (1.0 - beta) / (1.0 - beta**n)
  return w / w.sum() * len(n)


def ref_class_balanced_ce(z, y, counts, beta=0.9999):
  return ref_cb_weights(counts, beta)[np.asarray(y)] * -np_pick(np_log_softmax(z), y)


def ref_ldam_margins(counts, max_margin=0.5):
  n = np.asarray(counts, np.float64)
  return max_margin * (n.min() / n) ** 0.25  # C / n^(1/4) with C = max_margin * min(n)^(1/4)


def ref_ldam(z, y, counts, max_margin=0.5, s=30.0, weights=None):
  """-log( e^{s(z_y - D_y)} / (e^{s(z_y - D_y)} + sum_{c != y} e^{s z_c}) ), row by row."""
  z = np.asarray(z, np.float64)
  y = np.asarray(y)
  delta = ref_ldam_margins(counts, max_margin)
  zf, yf = z.reshape(-1, z.shape[-1]), y.reshape(-1)
  out = np.empty(len(yf))
  for i, (row, label) in enumerate(zip(zf, yf)):
    target = s * (row[label] - delta[label])
    others = s * np.delete(row, label)
    top = max(target, others.max())
    out[i] = -(target - top) + np.log(np.exp(target - top) + np.exp(others - top).sum())
    if weights is not None:
      out[i] *= weights[label]
  return out.reshape(y.shape)


def _data(shape, scale, seed):
  rng = np.random.default_rng(seed)
  return scale * rng.standard_normal(shape), rng.integers(0, shape[-1], size=shape[:-1])


# name -> (function, reference, hyper-parameters); the counts are passed separately.
CASES = {
  "logit_adjusted": (L.logit_adjusted, ref_logit_adjusted, {}),
  "logit_adjusted_tau2": (L.logit_adjusted, ref_logit_adjusted, {"tau": 2.0}),
  "balanced_softmax": (L.balanced_softmax, ref_balanced_softmax, {}),
  "class_balanced_ce": (L.class_balanced_ce, ref_class_balanced_ce, {}),
  "class_balanced_ce_b0.9": (L.class_balanced_ce, ref_class_balanced_ce, {"beta": 0.9}),
  "ldam": (L.ldam, ref_ldam, {}),
  "ldam_s1": (L.ldam, ref_ldam, {"s": 1.0, "max_margin": 1.0}),
}
REGISTERED = ["logit_adjusted", "balanced_softmax", "class_balanced_ce", "ldam", "ldam_drw"]


# ----------------------------------------------------------------------------------------------------------------
# Values.
# ----------------------------------------------------------------------------------------------------------------


def test_hand_computed_values():
  z = jnp.zeros((2, 2), jnp.float32)
  y = jnp.array([0, 1])
  # prior (0.75, 0.25): softmax(z + log pi) = pi
  np.testing.assert_allclose(L.logit_adjusted(z, y, class_counts=(3, 1)), [-np.log(0.75), -np.log(0.25)], rtol=1e-6)
  np.testing.assert_allclose(L.balanced_softmax(z, y, class_counts=(3, 1)), [-np.log(0.75), -np.log(0.25)], rtol=1e-6)
  # beta = 1/2, counts (1, 2): (1 - b)/(1 - b^n) = (1, 2/3) -> normalised to sum 2: (1.2, 0.8)
  np.testing.assert_allclose(L.effective_number_weights((1, 2), 0.5), [1.2, 0.8], rtol=1e-6)
  np.testing.assert_allclose(
    L.class_balanced_ce(z, y, class_counts=(1, 2), beta=0.5), [1.2 * np.log(2), 0.8 * np.log(2)], rtol=1e-6
  )
  # counts (16, 1): margins (0.25, 0.5); s = 2, z = 0, y = 1: CE([0, -1], 1) = log(1 + e)
  np.testing.assert_allclose(L.ldam_margins((16, 1), 0.5), [0.25, 0.5], rtol=1e-6)
  np.testing.assert_allclose(L.ldam(z, y, class_counts=(16, 1), s=2.0)[1], np.log1p(np.e), rtol=1e-6)
  # post-hoc: z - log pi
  np.testing.assert_allclose(
    L.posthoc_logit_adjustment(jnp.zeros((1, 2)), (3, 1)), [[-np.log(0.75), -np.log(0.25)]], rtol=1e-6
  )


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference_float32(case):
  fn, ref, hp = CASES[case]
  for shape, counts, seed in [((8, 5), COUNTS5, 0), ((2, 3, 4), COUNTS4, 1)]:
    z, y = _data(shape, 2.0, seed)
    z32 = jnp.asarray(z, jnp.float32)
    out = fn(z32, jnp.asarray(y), class_counts=counts, **hp)
    assert out.shape == y.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref(np.asarray(z32, np.float64), y, counts, **hp), rtol=3e-5, atol=3e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference_float64(case):
  fn, ref, hp = CASES[case]
  z, y = _data((4, 5), 3.0, 2)
  with jax.enable_x64(True):
    out = fn(jnp.asarray(z), jnp.asarray(y), class_counts=COUNTS5, **hp)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, ref(z, y, COUNTS5, **hp), rtol=1e-12, atol=1e-12)


def test_known_limits():
  z, y = _data((8, 5), 2.0, 3)
  ce = -np_pick(np_log_softmax(np.asarray(z, np.float32)), y)
  z32 = jnp.asarray(z, jnp.float32)
  np.testing.assert_allclose(L.logit_adjusted(z32, y, class_counts=COUNTS5, tau=0.0), ce, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(L.class_balanced_ce(z32, y, class_counts=COUNTS5, beta=0.0), ce, rtol=2e-5, atol=2e-6)
  # LDAM with no margin is CE of s z
  ce_s = -np_pick(np_log_softmax(3.0 * np.asarray(z, np.float32)), y)
  np.testing.assert_allclose(L.ldam(z32, y, class_counts=COUNTS5, max_margin=0.0, s=3.0), ce_s, rtol=2e-5, atol=2e-6)
  # beta -> 1: weights proportional to 1 / n
  with jax.enable_x64(True):
    inv = 1.0 / np.asarray(COUNTS5, np.float64)
    np.testing.assert_allclose(L.effective_number_weights(COUNTS5, 1 - 1e-10), inv / inv.sum() * 5, rtol=1e-6)
    np.testing.assert_allclose(L.effective_number_weights(COUNTS5, 0.9999), ref_cb_weights(COUNTS5, 0.9999), rtol=1e-12)
    np.testing.assert_allclose(L.ldam_margins(COUNTS5, 0.7), ref_ldam_margins(COUNTS5, 0.7), rtol=1e-12)


def test_posthoc_logit_adjustment():
  z, _ = _data((8, 5), 2.0, 4)
  n = np.asarray(COUNTS5, np.float64)
  for tau in (1.0, 0.5):
    out = L.posthoc_logit_adjustment(jnp.asarray(z, jnp.float32), COUNTS5, tau=tau)
    np.testing.assert_allclose(out, np.asarray(z, np.float32) - tau * np.log(n / n.sum()), rtol=1e-5, atol=1e-5)
  out = L.posthoc_logit_adjustment(jnp.asarray(z, jnp.bfloat16), COUNTS5)
  assert out.dtype == jnp.float32


def test_bfloat16_computed_in_float32():
  z, y = _data((8, 5), 2.0, 5)
  zb = jnp.asarray(z, jnp.bfloat16)
  for name, (fn, ref, hp) in CASES.items():
    out = fn(zb, y, class_counts=COUNTS5, **hp)
    assert out.dtype == jnp.float32, name
    expected = ref(np.asarray(zb.astype(jnp.float32), np.float64), y, COUNTS5, **hp)
    np.testing.assert_allclose(out, expected, rtol=3e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Gradients: jax.grad against central differences of the NumPy references (float64).
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_central_difference(case):
  fn, ref, hp = CASES[case]
  z, y = _data((4, 5), 1.0, 6)
  w = np.random.default_rng(6).uniform(0.5, 1.5, size=4)
  with jax.enable_x64(True):
    g = jax.grad(lambda a: jnp.sum(jnp.asarray(w) * fn(a, jnp.asarray(y), class_counts=COUNTS5, **hp)))(jnp.asarray(z))
  fd = central_difference(lambda a: np.sum(w * ref(a, y, COUNTS5, **hp)), z)
  np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-6, atol=1e-7)


def test_ldam_drw_gradient_central_difference():
  z, y = _data((4, 5), 1.0, 7)
  loss = L.get_loss("ldam_drw", data={"class_counts": COUNTS5}, drw_epoch=0, drw_beta=0.999)
  state = loss.init_state()
  weights = np.asarray(state.class_weights, np.float64)  # float32 state: the reference uses the same weights
  with jax.enable_x64(True):
    g = jax.grad(lambda a: jnp.sum(loss.per_example(a, jnp.asarray(y), state=state)))(jnp.asarray(z))
  fd = central_difference(lambda a: np.sum(ref_ldam(a, y, COUNTS5, weights=weights)), z)
  np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# Masking and bad labels.
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["logit_adjusted", "balanced_softmax", "class_balanced_ce", "ldam"])
def test_where_masking(case):
  fn, ref, hp = CASES[case]
  z, y = _data((8, 5), 2.0, 8)
  mask = np.arange(8) % 3 != 0
  z32 = jnp.asarray(z, jnp.float32)
  out = np.asarray(fn(z32, y, class_counts=COUNTS5, where=jnp.asarray(mask), **hp))
  assert np.all(out[~mask] == 0.0)
  np.testing.assert_allclose(out[mask], ref(np.asarray(z32, np.float64), y, COUNTS5, **hp)[mask], rtol=3e-5, atol=1e-6)
  g = np.asarray(jax.grad(lambda a: jnp.sum(fn(a, y, class_counts=COUNTS5, where=jnp.asarray(mask), **hp)))(z32))
  assert np.all(g[~mask] == 0.0) and np.any(g[mask] != 0.0)


def test_ldam_drw_masking_and_out_of_range_labels():
  z, y = _data((8, 5), 2.0, 9)
  loss = L.get_loss("ldam_drw", data={"class_counts": COUNTS5}, drw_epoch=0)
  state = loss.init_state()
  mask = np.array([True, False, True, True, False, True, True, False])
  out = np.asarray(loss.per_example(jnp.asarray(z, jnp.float32), y, where=jnp.asarray(mask), state=state))
  expected = ref_ldam(np.asarray(z, np.float32), y, COUNTS5, weights=ref_cb_weights(COUNTS5, 0.9999))
  assert np.all(out[~mask] == 0.0)
  np.testing.assert_allclose(out[mask], expected[mask], rtol=3e-5, atol=1e-6)
  bad = y.copy()
  bad[2] = 5
  out = np.asarray(loss.per_example(jnp.asarray(z, jnp.float32), bad, state=state))
  assert np.isnan(out[2]) and np.all(np.isfinite(np.delete(out, 2)))


@pytest.mark.parametrize("case", ["logit_adjusted", "class_balanced_ce", "ldam"])
def test_out_of_range_label_is_nan_in_its_row(case):
  fn, _, hp = CASES[case]
  z, y = _data((8, 5), 1.0, 10)
  y[1], y[3] = -1, 5
  out = np.asarray(fn(jnp.asarray(z, jnp.float32), y, class_counts=COUNTS5, **hp))
  assert np.isnan(out[1]) and np.isnan(out[3]) and np.all(np.isfinite(out[[0, 2, 4]]))


# ----------------------------------------------------------------------------------------------------------------
# Registry: class_counts from data=, the DRW switch, errors.
# ----------------------------------------------------------------------------------------------------------------


def test_ldam_drw_switch_exactly_at_drw_epoch():
  loss = L.get_loss("ldam_drw", data={"class_counts": COUNTS5}, drw_epoch=3)
  assert loss.stateful and not loss.needs_validation and L.data_hparams("ldam_drw") == ("class_counts",)
  z, y = _data((8, 5), 2.0, 11)
  z32 = jnp.asarray(z, jnp.float32)
  cb = ref_cb_weights(COUNTS5, 0.9999)
  state = loss.init_state()
  np.testing.assert_array_equal(state.class_weights, np.ones(5))
  np.testing.assert_allclose(state.margins, ref_ldam_margins(COUNTS5), rtol=1e-6)
  for epoch in range(1, 6):
    np.testing.assert_allclose(  # the state in force during this epoch
      loss.per_example(z32, y, state=state),
      ref_ldam(np.asarray(z32, np.float64), y, COUNTS5, weights=np.ones(5) if epoch <= 3 else cb),
      rtol=3e-5,
      atol=1e-6,
    )
    state = loss.update_state(state, epoch=epoch)
    expected = cb if epoch >= 3 else np.ones(5)
    np.testing.assert_allclose(state.class_weights, expected, rtol=1e-6, err_msg=f"after epoch {epoch}")
  # a traced epoch (a jitted update) switches at the same epoch
  update = jax.jit(lambda s, e: loss.update_state(s, epoch=e))
  np.testing.assert_array_equal(update(loss.init_state(), 2).class_weights, np.ones(5))
  np.testing.assert_allclose(update(loss.init_state(), 3).class_weights, cb, rtol=1e-6)
  # drw_epoch = 0: re-weighted from the first epoch
  np.testing.assert_allclose(
    L.get_loss("ldam_drw", data={"class_counts": COUNTS5}, drw_epoch=0).init_state().class_weights, cb, rtol=1e-6
  )
  # the default is the paper's 160
  default = L.get_loss("ldam_drw", data={"class_counts": COUNTS5})
  s = default.update_state(default.init_state(), epoch=159)
  assert np.all(np.asarray(s.class_weights) == 1.0)
  assert not np.allclose(default.update_state(s, epoch=160).class_weights, 1.0)


@pytest.mark.parametrize("name", ["logit_adjusted", "balanced_softmax", "class_balanced_ce", "ldam"])
def test_get_loss_with_data(name):
  fn, ref, _ = CASES[name]
  loss = L.get_loss(name, data={"class_counts": list(COUNTS5)})
  assert L.data_hparams(name) == ("class_counts",) and not loss.stateful
  z, y = _data((8, 5), 2.0, 12)
  z32 = jnp.asarray(z, jnp.float32)
  expected = ref(np.asarray(z32, np.float64), y, COUNTS5)
  np.testing.assert_allclose(loss.per_example(z32, y), expected, rtol=3e-5, atol=1e-6)
  np.testing.assert_allclose(jax.jit(lambda a, b: loss.per_example(a, b))(z32, y), expected, rtol=3e-5, atol=1e-6)


@pytest.mark.parametrize("name", REGISTERED)
def test_link_is_softmax_of_raw_logits(name):
  z, _ = _data((8, 5), 3.0, 13)
  probs = L.get_loss(name, data={"class_counts": COUNTS5}).probs(jnp.asarray(z, jnp.float32))
  np.testing.assert_allclose(probs, np.exp(np_log_softmax(np.asarray(z, np.float32))), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", REGISTERED)
@pytest.mark.parametrize(
  "counts,match",
  [((10, 0, 3), "positive"), ((5,), "one count per class"), (((1, 2), (3, 4)), "one count per class")],
)
def test_get_loss_rejects_bad_class_counts(name, counts, match):
  with pytest.raises(ValueError, match=match) as info:
    L.get_loss(name, data={"class_counts": counts})
  msg = str(info.value)
  assert "\n" not in msg and msg.startswith(f"{name}: `class_counts`")


@pytest.mark.parametrize("name", REGISTERED)
def test_class_counts_length_must_match_logits(name):
  loss = L.get_loss(name, data={"class_counts": COUNTS4})  # 4 classes
  z, y = _data((8, 5), 1.0, 14)  # 5 classes
  kwargs = {"state": loss.init_state()} if loss.stateful else {}
  with pytest.raises(ValueError, match="class_counts") as info:
    loss.per_example(jnp.asarray(z, jnp.float32), y, **kwargs)
  assert "\n" not in str(info.value) and str(info.value).startswith(f"{name}: ")


@pytest.mark.parametrize(
  "name,hp,arg",
  [
    ("logit_adjusted", {"tau": -1.0}, "tau"),
    ("class_balanced_ce", {"beta": 1.0}, "beta"),
    ("ldam", {"s": 0.0}, "s"),
    ("ldam", {"max_margin": -0.1}, "max_margin"),
    ("ldam_drw", {"drw_epoch": -1}, "drw_epoch"),
    ("ldam_drw", {"drw_beta": 1.0}, "drw_beta"),
  ],
)
def test_get_loss_rejects_bad_hparams(name, hp, arg):
  with pytest.raises(ValueError, match=f"`{arg}`"):
    L.get_loss(name, data={"class_counts": COUNTS5}, **hp)


def test_class_counts_type_errors():
  z, y = _data((3, 3), 1.0, 15)
  with pytest.raises(TypeError, match="`class_counts` must be integer"):
    L.logit_adjusted(jnp.asarray(z), y, class_counts=(1.0, 2.0, 3.0))
  with pytest.raises(ValueError, match="takes \\['class_counts'\\] from the training data"):
    L.get_loss("ldam", class_counts=COUNTS5)
  with pytest.raises(TypeError, match="ldam_drw: `drw_epoch`"):
    L.get_loss("ldam_drw", data={"class_counts": COUNTS5}, drw_epoch=1.5)


# ----------------------------------------------------------------------------------------------------------------
# Metrics.
# ----------------------------------------------------------------------------------------------------------------

HAND_PROBS = np.array(
  [[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]], np.float32
)
HAND_LABELS = np.array([0, 0, 1, 1, 1])  # class 2 has no test example


def test_metrics_hand_computed():
  acc = np.asarray(M.per_class_accuracy(HAND_PROBS, HAND_LABELS))
  np.testing.assert_allclose(acc[:2], [0.5, 1 / 3], rtol=1e-6)
  assert np.isnan(acc[2])
  np.testing.assert_allclose(M.balanced_accuracy(HAND_PROBS, HAND_LABELS), 5 / 12, rtol=1e-6)
  # 2 bins (0, .5], (.5, 1]: class 0: .5|1 - .7| + .5|0 - .5| = .4; class 1: (2/3)|.5 - .7| + (1/3)|0 - .4| = 4/15
  e2 = np.asarray(M.per_class_ece(HAND_PROBS, HAND_LABELS, num_bins=2))
  np.testing.assert_allclose(e2[:2], [0.4, 4 / 15], rtol=1e-6)
  assert np.isnan(e2[2])
  # 10 bins: every example alone in its bin: class 1: (.2 + .4 + .6) / 3
  np.testing.assert_allclose(M.per_class_ece(HAND_PROBS, HAND_LABELS, num_bins=10)[:2], [0.4, 0.4], rtol=1e-6)
  shots = M.shot_accuracy(HAND_PROBS, HAND_LABELS, (150, 50, 5))
  np.testing.assert_allclose([shots["many"], shots["medium"]], [0.5, 1 / 3], rtol=1e-6)
  assert np.isnan(shots["few"])  # its only class has no test example
  shots = M.shot_accuracy(HAND_PROBS, HAND_LABELS, (150, 10, 5))
  np.testing.assert_allclose([shots["many"], shots["few"]], [0.5, 1 / 3], rtol=1e-6)
  assert np.isnan(shots["medium"])
  summary = M.longtail_metrics(HAND_PROBS, HAND_LABELS, (150, 50, 5), num_bins=2)
  np.testing.assert_allclose(summary["mean_per_class_ece"], (0.4 + 4 / 15) / 2, rtol=1e-6)
  np.testing.assert_allclose(summary["balanced_accuracy"], 5 / 12, rtol=1e-6)


def test_shot_group_boundaries():
  groups = M.shot_groups((101, 100, 20, 19, 0))
  np.testing.assert_array_equal(groups["many"], [True, False, False, False, False])
  np.testing.assert_array_equal(groups["medium"], [False, True, True, False, False])
  np.testing.assert_array_equal(groups["few"], [False, False, False, True, True])
  groups = M.shot_groups((101, 100, 20, 19, 0), many_threshold=50, few_threshold=1)
  np.testing.assert_array_equal(groups["medium"], [False, False, True, True, False])


def _ref_metrics(probs, labels, counts, valid, num_bins):
  """Per-class accuracy, top-label ECE per class, balanced accuracy, shot accuracies (Liu et al.'s shot_acc)."""
  probs = np.asarray(probs, np.float64)
  k = probs.shape[1]
  pred, conf = probs.argmax(1), probs.max(1)
  bins = np.clip(np.ceil(conf * num_bins) - 1, 0, num_bins - 1)
  acc, ece = np.full(k, np.nan), np.full(k, np.nan)
  for c in range(k):
    sel = valid & (labels == c)
    if not sel.any():
      continue
    acc[c] = np.mean(pred[sel] == c)
    total = 0.0
    for b in range(num_bins):
      inb = sel & (bins == b)
      if inb.any():
        total += inb.sum() / sel.sum() * abs(np.mean(pred[inb] == c) - np.mean(conf[inb]))
    ece[c] = total
  present = ~np.isnan(acc)
  counts = np.asarray(counts)
  many, few = [], []
  medium = []
  for c in np.flatnonzero(present):
    (many if counts[c] > 100 else few if counts[c] < 20 else medium).append(acc[c])
  shots = {g: (np.mean(v) if v else np.nan) for g, v in (("many", many), ("medium", medium), ("few", few))}
  return acc, ece, np.mean(acc[present]), shots


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("masked", [False, True])
def test_metrics_match_reference(masked):
  rng = np.random.default_rng(20)
  n, k = 300, 7
  counts = (900, 101, 100, 20, 19, 3, 1)
  logits = rng.standard_normal((n, k)) * 2 + np.linspace(1.5, -1.5, k)
  probs = np.exp(np_log_softmax(logits)).astype(np.float32)
  labels = rng.integers(0, k - 1, size=n)  # the last class never appears in the test labels
  valid = rng.uniform(size=n) < 0.7 if masked else np.ones(n, bool)
  where = jnp.asarray(valid) if masked else None
  acc, ece, bacc, shots = _ref_metrics(probs, labels, counts, valid, 15)
  np.testing.assert_allclose(M.per_class_accuracy(probs, labels, where=where), acc, rtol=1e-6)
  np.testing.assert_allclose(M.per_class_ece(probs, labels, where=where), ece, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(M.balanced_accuracy(probs, labels, where=where), bacc, rtol=1e-6)
  pred = probs.argmax(1)
  np.testing.assert_allclose(bacc, balanced_accuracy_score(labels[valid], pred[valid]), rtol=1e-12)
  got = M.shot_accuracy(probs, labels, counts, where=where)
  for g in ("many", "medium", "few"):
    np.testing.assert_allclose(got[g], shots[g], rtol=1e-6, err_msg=g)
  summary = jax.jit(lambda p, y, w: M.longtail_metrics(p, y, counts, where=w))(probs, labels, jnp.asarray(valid))
  np.testing.assert_allclose(summary["mean_per_class_ece"], np.nanmean(ece), rtol=1e-5)
  np.testing.assert_allclose(summary["few_shot_accuracy"], shots["few"], rtol=1e-6)
  np.testing.assert_allclose(summary["per_class_accuracy"], acc, rtol=1e-6)


def test_metrics_masked_rows_count_nowhere():
  """Masked rows with garbage (NaN probabilities, out-of-range labels) change nothing."""
  probs = np.concatenate([HAND_PROBS, np.full((2, 3), np.nan, np.float32)])
  labels = np.concatenate([HAND_LABELS, [7, -1]])
  where = np.array([True] * 5 + [False] * 2)
  np.testing.assert_allclose(M.balanced_accuracy(probs, labels, where=where), 5 / 12, rtol=1e-6)
  np.testing.assert_allclose(M.per_class_ece(probs, labels, num_bins=2, where=where)[:2], [0.4, 4 / 15], rtol=1e-6)
  assert np.isnan(M.balanced_accuracy(HAND_PROBS, HAND_LABELS, where=np.zeros(5, bool)))


def test_metric_errors():
  with pytest.raises(ValueError, match="shot_accuracy: `class_counts` has 2 entries"):
    M.shot_accuracy(HAND_PROBS, HAND_LABELS, (10, 10))
  with pytest.raises(ValueError, match="few_threshold"):
    M.shot_accuracy(HAND_PROBS, HAND_LABELS, (10, 10, 10), many_threshold=5, few_threshold=10)
  with pytest.raises(TypeError, match="longtail_metrics: `class_counts`"):
    M.longtail_metrics(HAND_PROBS, HAND_LABELS, (1.5, 2.0, 3.0))
  with pytest.raises(ValueError, match="num_bins"):
    M.per_class_ece(HAND_PROBS, HAND_LABELS, num_bins=0)
