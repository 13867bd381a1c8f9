"""The one small grammar of the command line: ``key=value`` assignments.

* ``--set dataset.name=digits`` (a config field; dotted path),
* loss specs ``name[:key=value;key=value]`` (``mgce:beta=2.0;tol=1e-6``): the same assignments, for
  ``loss.hparams``,

with values read as Python literals when they parse as one (``2``, ``0.7``, ``(256,)``, ``True``), else kept as
strings. Regime specs (``symmetric:0.4,longtail:exp:10``) take positional fields instead; their parser is
`gence_jax.data.parse_regimes`.

>>> parse_assignment("loss.hparams.beta=1.43")
('loss.hparams.beta', 1.43)
>>> parse_loss_spec("mgce:beta=2;tol=1e-6")
('mgce', {'beta': 2, 'tol': 1e-06})
>>> loss_overrides("lq:q=0.7")
['loss.name=lq', 'loss.hparams.q=0.7']
"""

from __future__ import annotations

import ast
from typing import Any


def parse_value(text: str) -> Any:
  """A Python literal if `text` is one, else `text` itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_assignment(item: str, *, what: str = "--set") -> tuple[str, Any]:
  """``"a.b=v"`` -> ``("a.b", parse_value("v"))``; raises ValueError without ``=`` or with an empty key."""
  key, sep, text = item.partition("=")
  if not sep or not key.strip():
    raise ValueError(f"{what} expects key=value, got {item!r}")
  return key.strip(), parse_value(text)


def parse_loss_spec(spec: str) -> tuple[str, dict]:
  """``"generalized_ce:q=0.7"`` -> ``("generalized_ce", {"q": 0.7})``; ``;`` separates several; a plain name has none."""
  name, _, rest = spec.partition(":")
  if not name:
    raise ValueError(f"loss spec {spec!r}: expected name[:key=value;...]")
  items = (parse_assignment(item, what=f"loss spec {spec!r}") for item in filter(None, rest.split(";")))
  return name, dict(items)


def loss_overrides(spec: str) -> list[str]:
  """The ``--set`` assignments of a loss spec: ``loss.name=...`` and one ``loss.hparams.<key>=...`` per hparam."""
  name, _, rest = spec.partition(":")
  parse_loss_spec(spec)  # checks the syntax
  return [f"loss.name={name}"] + [f"loss.hparams.{item}" for item in filter(None, rest.split(";"))]
