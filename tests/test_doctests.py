"""Every docstring example in the toolkit packages runs and prints what it shows."""

import doctest
import importlib
import pkgutil

import pytest

import anomaly_freq

MODULES = [m.name for m in pkgutil.walk_packages(anomaly_freq.__path__, "anomaly_freq.")
           if m.name.split(".")[1] in {"freq", "synth", "metrics"}]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
