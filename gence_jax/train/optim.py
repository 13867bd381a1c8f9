"""Optimizers and learning-rate schedules from the config (optax)."""

from __future__ import annotations

import optax


def make_schedule(cfg, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """constant / cosine (to 0) / step (multiply by `step_factor` at each of `step_epochs`) / exponential (multiply by
  `decay_rate` after every epoch, a staircase: torch's ``ExponentialLR`` stepped once an epoch, the WebVision recipe
  of Ma et al. 2020), with linear warm-up.

  `step_epochs` entries <= 1 are fractions of training, larger ones are epochs.
  """
  lr = cfg.learning_rate
  warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
  decay_steps = max(total_steps - warmup, 1)
  if cfg.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif cfg.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps)
  elif cfg.schedule == "step":
    bounds = {}
    for b in cfg.step_epochs:
      step = int(round(b * total_steps)) if b <= 1 else int(round(b * steps_per_epoch))
      bounds[max(step - warmup, 1)] = cfg.step_factor
    main = optax.piecewise_constant_schedule(lr, bounds)
  elif cfg.schedule == "exponential":
    main = optax.exponential_decay(lr, max(steps_per_epoch, 1), cfg.decay_rate, staircase=True)
  else:
    raise ValueError(f"optimizer.schedule must be constant, cosine, step or exponential, got {cfg.schedule!r}")
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(cfg, total_steps: int, steps_per_epoch: int) -> optax.GradientTransformation:
  """Gradient clipping (global norm) -> weight decay -> SGD-momentum / Adam / AdamW with the schedule."""
  schedule = make_schedule(cfg, total_steps, steps_per_epoch)
  chain = []
  if cfg.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.name == "adamw":
    chain.append(optax.adamw(schedule, weight_decay=cfg.weight_decay))
  else:
    if cfg.weight_decay > 0:
      chain.append(optax.add_decayed_weights(cfg.weight_decay))
    if cfg.name == "sgd":
      chain.append(optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
    elif cfg.name == "adam":
      chain.append(optax.adam(schedule))
    else:
      raise ValueError(f"optimizer.name must be sgd, adam or adamw, got {cfg.name!r}")
  return optax.chain(*chain)
