"""Every ``>>>`` example in the package's docstrings and in docs/*.md runs and prints what it shows."""

from __future__ import annotations

import doctest
import glob
import importlib
import os
import pkgutil

import pytest

import gence_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | doctest.IGNORE_EXCEPTION_DETAIL


def _modules_with_examples():
  names = []
  for info in pkgutil.walk_packages(gence_jax.__path__, "gence_jax."):
    path = os.path.join(ROOT, *info.name.split(".")) + (os.sep + "__init__.py" if info.ispkg else ".py")
    if os.path.exists(path) and ">>>" in open(path).read():
      names.append(info.name)
  return names


MODULES = _modules_with_examples()
DOCS = sorted(p for p in glob.glob(os.path.join(ROOT, "docs", "*.md")) if ">>>" in open(p).read())


def test_examples_are_found():
  assert "gence_jax.losses.registry" in MODULES and "gence_jax.train.specs" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=FLAGS, verbose=False)
  assert result.attempted > 0 and result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


@pytest.mark.parametrize("path", DOCS, ids=os.path.basename)
def test_docs_examples(path):
  result = doctest.testfile(path, module_relative=False, optionflags=FLAGS, verbose=False)
  assert result.failed == 0, f"{path}: {result.failed} of {result.attempted} examples failed"
