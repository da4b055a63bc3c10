"""Name → class registries for methods and datasets.

In-tree plugins register themselves with a decorator when `anomaly_freq.methods` /
`anomaly_freq.data` are imported; third-party packages expose a method through the entry-point
group ``anomaly_freq.methods`` (the entry point may name the class itself or a module whose import
registers it). Lookups import both lazily, so `create_method("fair", image_size=128)` works
without any import side effect on the caller's part.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from anomaly_freq.errors import AfreqError

METHOD_ENTRY_POINTS = "anomaly_freq.methods"
DATASET_ENTRY_POINTS = "anomaly_freq.datasets"

_METHODS: dict[str, type] = {}
_DATASETS: dict[str, type] = {}
_loaded: set[str] = set()

T = TypeVar("T", bound=type)


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator: make a method available as ``method=<name>``."""
    return _register(_METHODS, "method", name)


def register_dataset(name: str) -> Callable[[T], T]:
    """Class decorator: make a dataset available as ``dataset=<name>``."""
    return _register(_DATASETS, "dataset", name)


def list_methods() -> list[str]:
    _load("methods")
    return sorted(_METHODS)


def list_datasets() -> list[str]:
    _load("datasets")
    return sorted(_DATASETS)


def known_names(kind: str) -> set[str]:
    """Names of ``kind`` ("method" or "dataset") registered so far, after importing the installed
    entry-point plugins if there are any (one may name a module that registers several). In-tree
    plugins stay unimported: each has a config file under its name (a test checks this), so a
    mistyped name fails fast without importing torch and Lightning."""
    table, group = ((_METHODS, METHOD_ENTRY_POINTS) if kind == "method"
                    else (_DATASETS, DATASET_ENTRY_POINTS))
    if entry_points(group=group):
        _load(f"{kind}s")
    return set(table)


def get_method(name: str) -> type:
    return _lookup(_METHODS, "method", name, list_methods)


def get_dataset(name: str) -> type:
    return _lookup(_DATASETS, "dataset", name, list_datasets)


def create_method(name: str, **kwargs: Any) -> Any:
    """The registered method ``name`` built from its keyword arguments (timm's
    ``create_model``): ``create_method("fair", base_width=16, image_size=128)``. From a run
    configuration: `anomaly_freq.config.build_method`."""
    return get_method(name)(**kwargs)


def create_dataset(name: str, cfg: Any) -> Any:
    """Instantiate the registered dataset ``name`` from the run configuration."""
    return get_dataset(name)(cfg)


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[T], T]:
    def decorator(cls: T) -> T:
        existing = table.get(name)
        if existing is not None and existing is not cls:
            raise AfreqError(
                f"{kind} name '{name}' is taken by {existing.__module__}.{existing.__qualname__}; "
                f"register {cls.__module__}.{cls.__qualname__} under another name"
            )
        cls.registry_name = name
        table[name] = cls
        return cls

    return decorator


def _lookup(table: dict[str, type], kind: str, name: str, lister: Callable[[], list[str]]) -> type:
    valid = lister()
    if name not in table:
        raise AfreqError(f"unknown {kind} '{name}'; valid {kind}s: {', '.join(valid)}")
    return table[name]


def _load(which: str) -> None:
    if which in _loaded:
        return
    _loaded.add(which)
    importlib.import_module(f"anomaly_freq.{'methods' if which == 'methods' else 'data'}")
    group, table = (
        (METHOD_ENTRY_POINTS, _METHODS) if which == "methods" else (DATASET_ENTRY_POINTS, _DATASETS)
    )
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
        except Exception as err:  # a broken plugin must not take the CLI down with it
            raise AfreqError(
                f"plugin entry point '{ep.name} = {ep.value}' failed to import: {err}"
            ) from err
        if isinstance(obj, type) and ep.name not in table:
            _register(table, which[:-1], ep.name)(obj)


def reset_plugin_cache() -> None:
    """Forget which entry points were read (tests install plugins at run time)."""
    _loaded.clear()
