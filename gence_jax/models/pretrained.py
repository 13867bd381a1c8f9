"""ImageNet-pretrained ResNets from torchvision state dicts.

torchvision's ``resnet18`` / ``resnet34`` / ``resnet50`` (He et al. 2016; the "v1.5" ResNet-50 with the stride in the
3x3 convolution, as :class:`gence_jax.models.ResNet` has it) name their tensors ``conv1``, ``bn1``,
``layer<s>.<i>.conv<j>`` / ``bn<j>``, ``layer<s>.<i>.downsample.0`` / ``.1`` (projection shortcut) and ``fc``. They map
onto the Flax ResNet with ``stem="imagenet"``: ``stem_conv`` / ``stem_bn``, ``stage<s>_block<i+1>`` with
``Conv_<j-1>`` / ``BatchNorm_<j-1>``, ``shortcut_conv`` / ``shortcut_bn``, and ``head``. Convolution weights go from
PyTorch's ``[out, in, kh, kw]`` to Flax's ``[kh, kw, in, out]``; BatchNorm ``weight`` / ``bias`` are ``scale`` /
``bias`` and ``running_mean`` / ``running_var`` the ``batch_stats`` ``mean`` / ``var``; ``fc.weight`` is transposed.
This is the conversion of Flax's guide "Convert PyTorch models to Flax".

Where to get the weights: ``torchvision.models.ResNet50_Weights.IMAGENET1K_V1`` (the file
``https://download.pytorch.org/models/resnet50-0676ba61.pth``; ``resnet18-f37072fd.pth``, ``resnet34-b627a593.pth``
for the others), saved with ``torch.save(model.state_dict(), path)`` or converted once to ``.safetensors`` / ``.npz``
(``{name: tensor.numpy()}``) so that loading needs no torch. The MGCE paper's Clothing-1M protocol (after Park et al.
2023) starts from ImageNet weights; which release of them it used is not stated, and V1 is the common choice.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

__all__ = ["load_state_dict", "torchvision_to_flax", "apply_pretrained"]


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """``{name: float32 array}`` from a ``.pth``/``.pt`` (torch needed, loaded with ``weights_only=True``), a
  ``.safetensors`` or an ``.npz`` file; a ``{"state_dict": ...}`` wrapper and a ``module.`` prefix are removed."""
  p = os.fspath(path)
  ext = os.path.splitext(p)[1].lower()
  if ext in (".pth", ".pt", ".bin"):
    try:
      import torch
    except ImportError as e:
      raise ImportError(f"reading {p!r} needs torch; convert it to .safetensors or .npz to load it without") from e
    obj = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj:
      obj = obj["state_dict"]
    tensors = {k: v.detach().float().numpy() for k, v in obj.items() if hasattr(v, "detach")}
  elif ext == ".safetensors":
    from safetensors.numpy import load_file

    tensors = dict(load_file(p))
  elif ext == ".npz":
    with np.load(p, allow_pickle=False) as f:
      tensors = {k: f[k] for k in f.files}
  else:
    raise ValueError(f"pretrained weights {p!r}: expected a .pth, .safetensors or .npz file")
  return {re.sub(r"^module\.", "", k): np.asarray(v, np.float32) for k, v in tensors.items()}


def _conv(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (2, 3, 1, 0))


def _bn(sd: Mapping[str, np.ndarray], prefix: str) -> tuple[dict, dict]:
  params = {"scale": sd[f"{prefix}.weight"], "bias": sd[f"{prefix}.bias"]}
  stats = {"mean": sd[f"{prefix}.running_mean"], "var": sd[f"{prefix}.running_var"]}
  return params, stats


def torchvision_to_flax(sd: Mapping[str, np.ndarray], *, with_head: bool = False) -> tuple[dict, dict]:
  """``(params, batch_stats)`` trees of the Flax ResNet (``stem="imagenet"``) holding a torchvision ResNet's state
  dict ``sd``; ``with_head`` also converts ``fc`` to ``head`` (otherwise the head is left out)."""
  params: dict[str, Any] = {"stem_conv": {"kernel": _conv(sd["conv1.weight"])}}
  stats: dict[str, Any] = {}
  params["stem_bn"], stats["stem_bn"] = _bn(sd, "bn1")
  blocks = sorted({m.group(1, 2) for k in sd if (m := re.match(r"layer(\d+)\.(\d+)\.", k))}, key=lambda t: tuple(map(int, t)))
  for stage, index in blocks:
    pre, name = f"layer{stage}.{index}", f"stage{stage}_block{int(index) + 1}"
    p, s = {}, {}
    j = 1
    while f"{pre}.conv{j}.weight" in sd:
      p[f"Conv_{j - 1}"] = {"kernel": _conv(sd[f"{pre}.conv{j}.weight"])}
      p[f"BatchNorm_{j - 1}"], s[f"BatchNorm_{j - 1}"] = _bn(sd, f"{pre}.bn{j}")
      j += 1
    if f"{pre}.downsample.0.weight" in sd:
      p["shortcut_conv"] = {"kernel": _conv(sd[f"{pre}.downsample.0.weight"])}
      p["shortcut_bn"], s["shortcut_bn"] = _bn(sd, f"{pre}.downsample.1")
    params[name], stats[name] = p, s
  if with_head:
    params["head"] = {"kernel": sd["fc.weight"].T, "bias": sd["fc.bias"]}
  return params, stats


def _merge(template: Any, loaded: Mapping, path: str, what: str) -> tuple[Any, int]:
  """``template`` (a nested dict of arrays, or of ``jax.ShapeDtypeStruct``: only shapes and dtypes are read) with every entry of ``loaded`` put in place; a name or shape that does
  not match is a ValueError naming it. Returns the new tree and the number of arrays replaced."""
  out, count = dict(template), 0
  for key, value in loaded.items():
    where = f"{path}/{key}" if path else key
    if key not in template:
      raise ValueError(f"pretrained weights {what}: {where} has no counterpart in the model")
    if isinstance(value, Mapping):
      out[key], n = _merge(template[key], value, where, what)
      count += n
      continue
    if tuple(np.shape(template[key])) != tuple(value.shape):
      raise ValueError(
        f"pretrained weights {what}: {where} has shape {tuple(value.shape)}, the model {tuple(np.shape(template[key]))}"
      )
    out[key] = np.asarray(value, template[key].dtype)
    count += 1
  missing = [k for k in template if k not in loaded and k != "head"] if not path else []
  if missing:
    raise ValueError(f"pretrained weights {what}: no tensors for {missing[:3]} of the model")
  return out, count


def apply_pretrained(params: Any, batch_stats: Any, path: str | os.PathLike, *, with_head: bool = False):
  """``(params, batch_stats, record)``: the model's variables with every layer but the head (kept as initialised,
  unless ``with_head``) taken from the torchvision state dict at ``path``. ValueError when names or shapes differ
  (e.g. ``stem="cifar"``, another depth or width)."""
  what = repr(os.fspath(path))
  loaded_params, loaded_stats = torchvision_to_flax(load_state_dict(path), with_head=with_head)
  new_params, n_params = _merge(_to_dict(params), loaded_params, "", what)
  new_stats, n_stats = _merge(_to_dict(batch_stats), loaded_stats, "", what)
  record = {"file": os.path.abspath(os.fspath(path)), "params": n_params, "batch_stats": n_stats,
            "head": "converted" if with_head else "re-initialised"}
  return new_params, new_stats, record


def _to_dict(tree: Any) -> dict:
  if isinstance(tree, Mapping):
    return {k: _to_dict(v) for k, v in tree.items()}
  return tree
