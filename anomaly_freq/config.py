"""Layered configuration, in one order: default.yaml, the method preset chain (base first), the
dataset file, the method's ``per_dataset.<dataset>`` block, then command-line overrides.

`load_config(["method=fair", "dataset=visa", "trainer.max_epochs=5"])` returns a read-only
OmegaConf tree. Overrides may only touch keys that the merged files define (``+key=value`` adds a
new one) and must keep the value's type; both mistakes raise `AfreqError` naming the key. A dataset
file may not change a value that the method preset set: that is a per_dataset setting of the
method. `explain_config` also says which layer set each value.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf._utils import get_omega_conf_dumper

from anomaly_freq.errors import AfreqError

CONFIG_DIR = Path(__file__).parent / "configs"
GROUPS = ("method", "dataset")
# Words a key accepts besides values of its default's type.
ALTERNATIVES = {"eval.resolution": ("original",)}
COMMAND_LINE = "command line"
_ABSENT = object()


@dataclass(frozen=True)
class Layer:
    """One source of settings: the label provenance shows, where it lives, its keys."""

    label: str  # default | method:fair_fast | dataset:visa | per_dataset:fair_fast.visa
    source: str  # configs/method/fair_fast.yaml, or the plugin whose default_config it is
    cfg: DictConfig


def load_config(overrides: Iterable[str] = (), config_dir: Path = CONFIG_DIR) -> DictConfig:
    """Build the resolved, read-only run configuration from ``key=value`` strings."""
    return explain_config(overrides, config_dir)[0]


def explain_config(overrides: Iterable[str] = (),
                   config_dir: Path = CONFIG_DIR) -> tuple[DictConfig, dict[str, str]]:
    """The resolved configuration and, for each leaf key, the label of the layer that set it."""
    parsed = [_split_override(item) for item in overrides]
    groups = {key: value for key, value, _ in parsed if key in GROUPS}
    rest = [(key, value, add) for key, value, add in parsed if key not in GROUPS]

    default_path = config_dir / "default.yaml"
    layers = [Layer("default", _shown(default_path, config_dir), _read_yaml(default_path))]
    by_group = {}
    for group in GROUPS:
        name = groups.get(group, _merged(layers)[group]["name"])
        by_group[group] = _named(group, name, group_layers(group, name, config_dir))
        layers += by_group[group]
    cfg = _merged(layers)
    cfg.method.preset = groups.get("method", cfg.method.name)  # e.g. fair_fast, for labels
    per_dataset = _per_dataset_layers(layers, cfg.dataset.name)
    _refuse_conflicts(by_group["method"], by_group["dataset"], per_dataset, cfg.dataset.name)
    layers += per_dataset
    cfg = OmegaConf.merge(cfg, *(layer.cfg for layer in per_dataset))
    cfg.pop("per_dataset", None)  # applied: a run's config holds only what it used

    for key, raw, add in rest:
        _apply_override(cfg, key, raw, add)
    OmegaConf.set_readonly(cfg, True)
    OmegaConf.set_struct(cfg, True)
    preset_source = COMMAND_LINE if "method" in groups else "default"
    return cfg, _provenance(cfg, layers, [key for key, _, _ in rest], preset_source)


def group_layers(group: str, name: str, config_dir: Path = CONFIG_DIR) -> list[Layer]:
    """The layers a method or dataset adds, base first: its YAML file and the files it starts
    from (``_base_: <name>``, presets such as ``fair_fast``), else the plugin's `default_config`.

    A method file may hold ``per_dataset: {<dataset>: {...}}``, merged when that dataset is used.
    """
    from anomaly_freq import registry

    path = config_dir / group / f"{name}.yaml"
    if path.exists():
        cfg = _read_yaml(path)
        base = cfg.pop("_base_", None)
        own = Layer(f"{group}:{name}", _shown(path, config_dir), cfg)
        return [*group_layers(group, str(base), config_dir), own] if base else [own]
    known = registry.known_names(group)
    if name not in known:
        available = sorted({*known, *(p.stem for p in (config_dir / group).glob("*.yaml"))})
        raise AfreqError(
            f"unknown {group} '{name}'{_suggest(name, available)}; "
            f"valid {group}s: {', '.join(available)}"
        )
    cls = registry.get_method(name) if group == "method" else registry.get_dataset(name)
    cfg = OmegaConf.create(dict(getattr(cls, "default_config", {}) or {}))
    return [Layer(f"{group}:{name}", f"the default_config of {group} plugin {name}", cfg)]


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


def explained_yaml(cfg: DictConfig, sources: Mapping[str, str]) -> str:
    """The resolved config as YAML, each value followed by ``# <layer that set it>``."""
    lines: list[str] = []
    _emit(OmegaConf.to_container(cfg, resolve=True), "", lines, sources)
    return "".join(f"{line}\n" for line in lines)


def _emit(node: dict, prefix: str, lines: list[str], sources: Mapping[str, str]) -> None:
    indent = "  " * prefix.count(".")
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            _emit(value, f"{path}.", lines, sources)
            continue
        lines.append(f"{indent}{key}: {_one_line(value)}".ljust(40) + f"  # {sources[path]}")


def _one_line(value: Any) -> str:
    """A value in YAML flow style, quoted the way OmegaConf reads it back (``[2, 3]``, ``cv2``)."""
    listed = yaml.dump([value], Dumper=get_omega_conf_dumper(), default_flow_style=True,
                       width=1 << 20, allow_unicode=True)
    return listed.strip()[1:-1]


def _named(group: str, name: str, layers: list[Layer]) -> list[Layer]:
    """A group's layers, the last one naming the group when none does (a plugin may not)."""
    if _lookup(_merged(layers), f"{group}.name") is not _ABSENT:
        return layers
    *below, top = layers
    return [*below, Layer(top.label, top.source, OmegaConf.merge(top.cfg, {group: {"name": name}}))]


def _per_dataset_layers(layers: list[Layer], dataset: str) -> list[Layer]:
    return [Layer(f"per_dataset:{layer.label.rpartition(':')[2]}.{dataset}", layer.source, block)
            for layer in layers
            if (block := layer.cfg.get("per_dataset", {}).get(dataset)) is not None]


def _refuse_conflicts(method: list[Layer], dataset: list[Layer], per_dataset: list[Layer],
                      dataset_name: str) -> None:
    """A dataset file that changes a value the method preset set: one error naming both files."""
    chosen, ruled = _merged(method), _merged(per_dataset)
    for path, value in _leaves(_merged(dataset)):
        before = _lookup(chosen, path)
        agreed = before is _ABSENT or _plain(before) == _plain(value)
        if agreed or _lookup(ruled, path) is not _ABSENT:
            continue
        owner = _last_with(method, path)
        setter = _last_with(dataset, path)
        raise AfreqError(
            f"config key '{path}' is {_plain(before)} in {owner.source} but {_plain(value)} in "
            f"{setter.source}; a dataset file may not override a method preset: set '{path}' "
            f"for {dataset_name} under per_dataset.{dataset_name} in {owner.source}"
        )


def _provenance(cfg: DictConfig, layers: list[Layer], overridden: list[str],
                preset_source: str) -> dict[str, str]:
    sources = {}
    for path, _ in _leaves(cfg):
        if any(path == key or path.startswith(f"{key}.") for key in overridden):
            sources[path] = COMMAND_LINE
        elif path == "method.preset":
            sources[path] = preset_source
        else:
            sources[path] = _last_with(layers, path).label
    return sources


def _last_with(layers: list[Layer], path: str) -> Layer:
    return next(layer for layer in reversed(layers) if _lookup(layer.cfg, path) is not _ABSENT)


def _merged(layers: list[Layer]) -> DictConfig:
    return OmegaConf.merge(*(layer.cfg for layer in layers)) if layers else OmegaConf.create()


def _leaves(node: DictConfig, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys and values of a tree's leaves; an empty mapping is a leaf."""
    for name, value in node.items_ex(resolve=False):
        if isinstance(value, DictConfig) and len(value):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def _lookup(node: Any, path: str) -> Any:
    """The value at a dotted key, or _ABSENT where the tree does not define it."""
    for part in path.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return _ABSENT
        node = node[part]
    return node


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value


def _shown(path: Path, config_dir: Path) -> str:
    """How a config file is named in messages: from the config folder's parent on."""
    return path.relative_to(config_dir.parent).as_posix()


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


# ---------------------------------------------------------------- method arguments

#: Config sections whose keys become a method's keyword arguments, and the prefix each gets.
METHOD_SECTIONS = {"method": "", "model": "", "backbone": "backbone_", "synth": ""}
#: ``method.*`` keys the framework reads itself; never passed to a method.
FRAMEWORK_KEYS = frozenset({"name", "preset", "channels_last", "compile"})
#: Run values offered to a method whose constructor names them → their config key.
RUN_VALUES = {"seed": "seed", "category": "dataset.category",
              "batch_size": "dataset.batch_size", "shot_fill": "dataset.shot_fill"}


def build_method(cfg: DictConfig) -> Any:
    """The run's method, ``cfg.method.name`` built from `method_arguments`."""
    from anomaly_freq import registry

    return registry.create_method(cfg.method.name,
                                  **method_arguments(registry.get_method(cfg.method.name), cfg))


def method_arguments(cls: type, cfg: DictConfig) -> dict[str, Any]:
    """The keyword arguments that build method class ``cls`` from the run configuration.

    ``method.<key>`` → ``<key>``, ``model.<key>`` → ``<key>``, ``backbone.<key>`` →
    ``backbone_<key>``, ``synth.<key>`` → ``<key>``. A nested table ``<section>.<group>.<key>``
    gives ``<group>_<key>`` (``method.filter.d0`` → ``filter_d0``), unless the constructor takes
    ``<group>`` itself: then it gets the whole table as a dict (DFD's ``foreground``). The
    framework's own ``method.name``, ``method.preset``, ``method.channels_last`` and
    ``method.compile`` are not passed. Run values go to a constructor that names them:
    ``image_size`` (the side the model sees: ``dataset.center_crop``, else
    ``dataset.image_size``), ``seed``, ``category``, ``batch_size`` and ``shot_fill``
    (``dataset.*``). A key the constructor does not take, two keys that give one argument and
    a required argument that no key gives each raise `AfreqError`.
    """
    accepted = constructor_parameters(cls)
    label = f"method class {cls.__module__}.{cls.__qualname__}"
    keys = list(_method_keys(cfg, accepted))
    run_values = _run_values(cfg)
    given = {name for _, name, _ in keys} | run_values.keys()
    missing = [name for name, required in accepted.items() if required and name not in given]
    if missing:
        raise AfreqError(f"{label} requires '{missing[0]}', which no config key gives; a "
                         "method takes keyword arguments with defaults (docs/plugins.md)")
    source: dict[str, str] = {}  # argument → the config key that gave it
    arguments: dict[str, Any] = {}
    for key, name, value in keys:
        if name not in accepted:
            raise AfreqError(f"config key '{key}' (argument '{name}') is not taken by {label}"
                             f"{_suggest(name, accepted)}; remove the key or add the argument")
        if name in source:
            raise AfreqError(f"config keys '{source[name]}' and '{key}' both give argument "
                             f"'{name}' of {label}; rename one of them")
        source[name] = key
        arguments[name] = OmegaConf.to_container(value, resolve=True) if isinstance(
            value, DictConfig | ListConfig) else value
    for name, value in run_values.items():
        if name not in accepted:
            continue
        if name in source:
            raise AfreqError(f"config key '{source[name]}' gives argument '{name}' of {label}, "
                             "which the run sets; rename the key")
        arguments[name] = value
    return arguments


def _run_values(cfg: DictConfig) -> dict[str, Any]:
    values = {name: OmegaConf.select(cfg, key) for name, key in RUN_VALUES.items()}
    values["image_size"] = (OmegaConf.select(cfg, "dataset.center_crop")
                            or OmegaConf.select(cfg, "dataset.image_size"))
    return {name: value for name, value in values.items() if value is not None}


def constructor_parameters(cls: type) -> dict[str, bool]:
    """Keyword arguments ``cls(...)`` takes → whether each is required; a constructor with
    ``**kwargs`` also takes those of the next ``__init__`` up the class hierarchy."""
    parameters: dict[str, bool] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        passes_on = False
        for p in list(inspect.signature(klass.__init__).parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                passes_on = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                parameters.setdefault(p.name, p.default is p.empty)
        if not passes_on:
            break
    return parameters


def _method_keys(cfg: DictConfig, accepted: Mapping[str, bool]) -> Iterable[tuple[str, str, Any]]:
    """(config key, argument name, value) of every method-owned key."""
    for section, prefix in METHOD_SECTIONS.items():
        node = cfg.get(section)
        if isinstance(node, DictConfig):
            yield from _flatten(node, section, prefix, accepted)


def _flatten(node: DictConfig, path: str, prefix: str,
             accepted: Mapping[str, bool]) -> Iterable[tuple[str, str, Any]]:
    for key, value in node.items():
        if path == "method" and key in FRAMEWORK_KEYS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, DictConfig) and len(value) and name not in accepted:
            yield from _flatten(value, f"{path}.{key}", f"{name}_", accepted)
        else:
            yield f"{path}.{key}", name, value


def speed_options(cfg: DictConfig) -> dict[str, bool]:
    """``method.channels_last`` and ``method.compile`` (false where a method has no such key),
    as `AnomalyModule.apply_speed_options` takes them."""
    return {key: bool(OmegaConf.select(cfg, f"method.{key}", default=False))
            for key in ("channels_last", "compile")}
