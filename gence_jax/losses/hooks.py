"""What a training program needs to know about a loss beyond its per-example value.

A registered loss (`gence_jax.losses.get_loss`) may carry three optional behaviours, each defined here for the losses
that need it, so that a training program never tests a loss's name:

* **state** (`StateSpec`): a pytree the program keeps in its train state (checkpointed with it), passes to every
  step as ``per_example(..., state=state)``, and updates once per epoch with
  ``update(state, epoch=..., val_probs=..., val_labels=..., **hparams)`` (validation predictions through the loss's
  link, only computed when ``needs_validation``). AdaFocal's per-bin gammas are such a state.
* **a default parameter penalty** ``default_l1``: the lambda of ``lambda * ||params||_1`` added to the objective
  when the run's config does not set one (MGCE's uncertainty-set radius, MRCpy's default 1e-5).
* **a post-training report** ``report(loss, logits, labels, params, l1) -> dict`` computed on the training split
  after training (MGCE's objective, see `mgce_objective_report`).

Recipe for a new stateful loss: write ``fn(logits, labels, *, state, where=None, axis_name=None, **hp)`` and the two
functions ``init(**hparams) -> state`` and ``update(state, *, epoch, val_probs, val_labels, **hparams) -> state``,
then register ``_Entry(fn, state=StateSpec(init, update, hparams=(...)))`` in `gence_jax.losses.registry` (or call
`gence_jax.losses.register_loss` from your own code). Nothing in the training program changes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp

from gence_jax.losses.adafocal import adafocal, adafocal_init, adafocal_update
from gence_jax.losses.minimax_gce import mgce_l1_penalty

if TYPE_CHECKING:
  from gence_jax.losses.registry import Loss


@dataclasses.dataclass(frozen=True)
class StateSpec:
  """How a stateful loss creates and updates its state.

  Attributes:
    init: ``init(**hparams) -> state`` (a pytree of arrays).
    update: ``update(state, *, epoch, val_probs, val_labels, **hparams) -> state``, called after every epoch.
    hparams: the loss's hyper-parameters that belong to ``init``/``update`` (not passed to the per-example function).
    needs_validation: whether ``update`` reads validation predictions (else they are passed as None).
  """

  init: Callable[..., Any]
  update: Callable[..., Any]
  hparams: tuple[str, ...] = ()
  needs_validation: bool = True


# ----------------------------------------------------------------------------------------------------- AdaFocal
ADAFOCAL_DEFAULTS = dict(num_bins=15, gamma_init=1.0, lam=1.0, gamma_max=20.0, gamma_min=-2.0, switch_threshold=0.2)


def adafocal_with_state(logits, labels, *, state, where=None, axis_name=None) -> jax.Array:
  """AdaFocal (Ghosh, Schaaf & Gormley 2022) reading its per-bin gammas and bin edges from ``state``."""
  return adafocal(
    logits, labels, gammas=state.gammas, bin_edges=state.bin_edges, where=where, axis_name=axis_name
  )


def _adafocal_init(*, num_bins=15, gamma_init=1.0, **_):
  return adafocal_init(num_bins, gamma_init)


def _adafocal_update(
  state, *, epoch, val_probs, val_labels, lam=1.0, gamma_max=20.0, gamma_min=-2.0, switch_threshold=0.2, **_
):
  del epoch
  return adafocal_update(
    state, val_probs, val_labels, lam=lam, gamma_max=gamma_max, gamma_min=gamma_min, switch_threshold=switch_threshold
  )


ADAFOCAL_STATE = StateSpec(init=_adafocal_init, update=_adafocal_update, hparams=tuple(ADAFOCAL_DEFAULTS))


def check_adafocal_hparams(**hparams) -> None:
  """Traces AdaFocal's init and update once, so a bad setting raises before training (naming the setting)."""
  hp = {**ADAFOCAL_DEFAULTS, **hparams}
  state = _adafocal_init(**hp)
  jax.eval_shape(
    lambda s, p, y: _adafocal_update(s, epoch=0, val_probs=p, val_labels=y, **hp),
    state,
    jax.ShapeDtypeStruct((4, 3), jnp.float32),
    jax.ShapeDtypeStruct((4,), jnp.int32),
  )


# --------------------------------------------------------------------------------------------------------- MGCE
def mgce_objective_report(
  loss: Loss, logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, params: Any, l1: float
) -> dict:
  r"""The MGCE training objective on the training split, and what it bounds.

  .. math:: R = \frac{1}{n}\sum_i \bigl[-z_{y_i} - \nu(z_i)\bigr] + \lambda \lVert\theta\rVert_1

  over the training split with the labels it was trained on (noisy ones included), without augmentation.
  Pointwise, :math:`1 - h_y(z) \le -z_y - \nu(z)` (``h`` the MGCE link), so the mean loss upper-bounds the error of
  the *randomised* rule that predicts class c with probability :math:`h_c(x)`, on those training labels; under the
  conditions of Bondugula et al. (AISTATS 2026, Remark 1: the data distribution lies in the uncertainty set of
  radius lambda around the training statistics) the objective bounds that rule's expected error under the data
  distribution. It is not a bound on the argmax rule's test error (a two-class example: z = [0.05, 0], y = 1,
  beta = 2 gives loss 0.611 while the argmax errs).
  """

  def summary(z, y, params):  # one compiled program (called eagerly, the root finder compiles each operation)
    label_prob = jnp.take_along_axis(loss.probs_fn(z), y[:, None], axis=-1)
    penalty = mgce_l1_penalty(params, l1) if l1 > 0 else jnp.zeros(())
    return jnp.mean(loss.per_example(z, y)), penalty, 1.0 - jnp.mean(label_prob)

  mean_loss, penalty, randomized_error = map(float, jax.jit(summary)(logits, labels, params))
  return {
    "objective": mean_loss + penalty,
    "train_mean_loss": mean_loss,
    "l1_term": penalty,
    "lambda": l1,
    "train_randomized_error": randomized_error,
    "bounds": "expected 0-1 error of the randomised rule h(x) on the training labels (Remark 1's conditions for "
    "the data distribution); not the argmax test error",
  }
