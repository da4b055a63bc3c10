"""Layered configuration: default.yaml, then a method file, a dataset file, then overrides.

`load_config(["method=fair", "dataset=visa", "trainer.max_epochs=5"])` returns a read-only
OmegaConf tree. Overrides may only touch keys that the merged files define (``+key=value`` adds a
new one) and must keep the value's type; both mistakes raise `AfreqError` naming the key.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from anomaly_freq.errors import AfreqError

CONFIG_DIR = Path(__file__).parent / "configs"
GROUPS = ("method", "dataset")
# Words a key accepts besides values of its default's type.
ALTERNATIVES = {"eval.resolution": ("original",)}


def load_config(overrides: Iterable[str] = (), config_dir: Path = CONFIG_DIR) -> DictConfig:
    """Build the resolved, read-only run configuration from ``key=value`` strings."""
    parsed = [_split_override(item) for item in overrides]
    groups = {key: value for key, value, _ in parsed if key in GROUPS}
    rest = [(key, value, add) for key, value, add in parsed if key not in GROUPS]

    cfg = _read_yaml(config_dir / "default.yaml")
    for group in GROUPS:
        name = groups.get(group, cfg[group]["name"])
        defaults = group_defaults(group, name, config_dir)
        cfg = OmegaConf.merge(cfg, defaults)
        cfg[group]["name"] = defaults.get(group, {}).get("name", name)
    cfg.method.preset = groups.get("method", cfg.method.name)  # e.g. fair_fast, for labels
    per_dataset = cfg.get("per_dataset", {}).get(cfg.dataset.name)
    if per_dataset is not None:
        cfg = OmegaConf.merge(cfg, per_dataset)

    for key, raw, add in rest:
        _apply_override(cfg, key, raw, add)
    OmegaConf.set_readonly(cfg, True)
    OmegaConf.set_struct(cfg, True)
    return cfg


def group_defaults(group: str, name: str, config_dir: Path = CONFIG_DIR) -> DictConfig:
    """Defaults a method or dataset adds: its YAML file, else the plugin's `default_config`.

    A file may start from another with ``_base_: <name>`` (presets such as ``fair_fast``), and a
    method file may hold ``per_dataset: {<dataset>: {...}}``, merged when that dataset is used.
    """
    from anomaly_freq import registry

    path = config_dir / group / f"{name}.yaml"
    if path.exists():
        cfg = _read_yaml(path)
        base = cfg.pop("_base_", None)
        return OmegaConf.merge(group_defaults(group, base, config_dir), cfg) if base else cfg
    known = registry.known_names(group)
    if name not in known:
        available = sorted({*known, *(p.stem for p in (config_dir / group).glob("*.yaml"))})
        raise AfreqError(
            f"unknown {group} '{name}'{_suggest(name, available)}; "
            f"valid {group}s: {', '.join(available)}"
        )
    cls = registry.get_method(name) if group == "method" else registry.get_dataset(name)
    return OmegaConf.create(dict(getattr(cls, "default_config", {}) or {}))


def preset_chain(group: str, name: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """The files a preset is built from, itself first: ``["fair_fast", "fair"]``."""
    chain = [name]
    while (path := config_dir / group / f"{chain[-1]}.yaml").exists():
        base = _read_yaml(path).get("_base_")
        if not base:
            break
        chain.append(str(base))
    return chain


def config_to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def _read_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise AfreqError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(cfg, DictConfig):
        raise AfreqError(f"config file {path} must hold a mapping at the top level")
    return cfg


def _split_override(item: str) -> tuple[str, str, bool]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise AfreqError(f"override '{item}' must look like key=value (e.g. trainer.max_epochs=5)")
    add = key.startswith("+")
    return key.lstrip("+").strip(), value, add


def _apply_override(cfg: DictConfig, key: str, raw: str, add: bool) -> None:
    if key in (f"{group}.name" for group in GROUPS):
        group = key.partition(".")[0]
        raise AfreqError(f"choose the {group} with {group}={raw}, not {key}=...: that loads the "
                         f"{group}'s own defaults too")
    *parents, leaf = key.split(".")
    node: Any = cfg
    for depth, part in enumerate(parents):
        if not isinstance(node, DictConfig) or part not in node:
            if add and isinstance(node, DictConfig):
                node[part] = {}
            else:
                _unknown_key(cfg, ".".join(parents[: depth + 1]), node)
        node = node[part]
    if not isinstance(node, DictConfig):
        raise AfreqError(f"'{'.'.join(parents)}' is a value, not a group; cannot set '{key}'")
    if leaf not in node:
        if not add:
            _unknown_key(cfg, key, node)
        node[leaf] = _parse_value(raw)
        return
    node[leaf] = _coerce(key, node[leaf], raw)


def _unknown_key(cfg: DictConfig, key: str, node: Any) -> None:
    siblings = list(node.keys()) if isinstance(node, Mapping | DictConfig) else []
    prefix = key.rpartition(".")[0]
    candidates = [f"{prefix}.{s}" if prefix else s for s in siblings] + _all_keys(cfg)
    where = f" under '{prefix}'" if prefix else ""
    raise AfreqError(
        f"unknown config key '{key}'{_suggest(key, candidates)}; valid keys{where}: "
        f"{', '.join(map(str, siblings))} (use +{key}=... to add a new key on purpose)"
    )


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        path = f"{prefix}{name}"
        keys.append(path)
        if isinstance(value, DictConfig):
            keys.extend(_all_keys(value, path + "."))
    return keys


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(dict.fromkeys(candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def _coerce(key: str, old: Any, raw: str) -> Any:
    """Parse ``raw`` and check it against the type of the value it replaces."""
    new = _parse_value(raw)
    if isinstance(old, DictConfig):
        raise AfreqError(f"'{key}' is a group of keys ({', '.join(old.keys())}); set one of them")
    if new is None and not (old is None or isinstance(old, str)):
        raise AfreqError(f"'{key}' cannot be null; its default is {old}")
    if new is None or old is None or raw in ALTERNATIVES.get(key, ()):
        return new
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
        expected = "true or false"
    elif isinstance(old, int):
        if isinstance(new, int) and not isinstance(new, bool):
            return new
        expected = "an integer"
    elif isinstance(old, float):
        try:
            return float(raw)
        except ValueError:
            expected = "a number"
    elif isinstance(old, str):
        return raw
    elif isinstance(old, ListConfig):
        if isinstance(new, list):
            return new
        expected = "a list like [1,2]"
    else:
        return new
    raise AfreqError(f"config key '{key}' expects {expected}, got '{raw}'")
