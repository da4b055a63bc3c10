"""Methods take typed keyword arguments; `method_arguments` builds them from the configuration."""

import inspect

import pytest
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from anomaly_freq import registry
from anomaly_freq.config import (
    CONFIG_DIR,
    FRAMEWORK_KEYS,
    build_method,
    constructor_parameters,
    group_layers,
    load_config,
    method_arguments,
)
from anomaly_freq.contract import AnomalyModule, check_outputs
from anomaly_freq.errors import AfreqError
from anomaly_freq.methods.dfd import DFD
from anomaly_freq.methods.fair import FAIR
from anomaly_freq.methods.freqstat.model import FreqStat
from anomaly_freq.methods.ocrgan import OCRGAN

SIDE = 32
PAPER_PRESETS = {"freqstat": FreqStat, "fair": FAIR, "dfd": DFD, "ocrgan": OCRGAN}
PRESETS = [p.stem for p in sorted((CONFIG_DIR / "method").glob("*.yaml"))]


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))


def _fitted_freqstat() -> FreqStat:
    model = FreqStat(image_size=SIDE)
    model.on_train_epoch_start()
    model.training_step({"image": _images(4)}, 0)
    model.prepare_for_inference()
    return model


TYPED = {
    "freqstat": _fitted_freqstat,
    "fair": lambda: FAIR(base_width=4, image_size=SIDE),
    "dfd": lambda: DFD(feature_dim=16, gaussian_hidden=8, vit_heads=2, backbone_name="resnet18",
                       backbone_layers=(1, 2), backbone_pretrained=False, smoothing_sigma=1.0,
                       image_size=SIDE),
    "ocrgan": lambda: OCRGAN(ngf=4, ndf=4, image_size=SIDE, batch_size=4),
}


@pytest.mark.parametrize("name", sorted(TYPED))
def test_each_method_builds_and_predicts_from_typed_arguments_alone(name):
    torch.manual_seed(0)
    model = TYPED[name]().eval()
    batch = {"image": _images(3)}
    with torch.no_grad():
        out = model.predict_step(batch)
    check_outputs(out, batch, name)
    assert out["anomaly_map"].shape == (3, 1, SIDE, SIDE)
    assert out["pred_score"].shape == (3,)
    assert torch.isfinite(out["pred_score"]).all()


@pytest.mark.parametrize(("override", "key"), [
    ("+method.filter.knd=ideal", "method.filter.knd"),
    ("+model.base_widht=8", "model.base_widht"),
])
def test_a_key_the_constructor_does_not_take_is_refused_in_one_line(override, key):
    cfg = load_config(["method=fair", override])
    with pytest.raises(AfreqError, match=rf"'{key}'.*FAIR") as caught:
        build_method(cfg)
    assert "\n" not in str(caught.value)


def test_a_constructor_that_wants_the_config_is_told_the_contract():
    class Legacy(AnomalyModule):
        def __init__(self, cfg):
            super().__init__()

    with pytest.raises(AfreqError, match="requires 'cfg'.*keyword arguments"):
        method_arguments(Legacy, load_config())


def test_kwargs_pass_on_the_parent_arguments_and_the_run_values():
    class Child(FreqStat):
        def __init__(self, *, gain: float = 1.0, **kwargs):
            super().__init__(**kwargs)
            self.gain = gain

    assert {"gain", "d0", "image_size", "seed"} <= constructor_parameters(Child).keys()
    args = method_arguments(Child, load_config(["seed=4", "dataset.center_crop=48"]))
    assert (args["seed"], args["image_size"], args["d0"]) == (4, 48, 16.0)
    assert Child(**args).mean.shape[-1] == 48


def _leaves(node: DictConfig, path: str):
    for key, value in node.items():
        if isinstance(value, DictConfig) and len(value):
            yield from _leaves(value, f"{path}.{key}")
        else:
            yield f"{path}.{key}"


def _owned_keys(node: DictConfig) -> set[str]:
    return {key for section in ("method", "model", "backbone", "synth") if section in node
            for key in _leaves(node[section], section)
            if not (section == "method" and key.split(".")[1] in FRAMEWORK_KEYS)}


def _key_sets(preset: str) -> dict[str, set[str]]:
    """dataset → the method-owned keys of the preset's YAML chain that a run on it uses."""
    defaults = OmegaConf.merge(*(layer.cfg for layer in group_layers("method", preset)))
    base = _owned_keys(defaults)
    return {"synthetic": base, **{dataset: base | _owned_keys(block)
                                  for dataset, block in defaults.get("per_dataset", {}).items()}}


def _plain(value):
    return OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value


@pytest.mark.parametrize("preset", PRESETS)
def test_every_key_of_every_preset_reaches_the_constructor(preset):
    for dataset, keys in _key_sets(preset).items():
        assert keys
        cfg = load_config([f"method={preset}", f"dataset={dataset}"])
        args = method_arguments(registry.get_method(cfg.method.name), cfg)
        for key in keys:
            section, *path = key.split(".")
            prefix = "backbone_" if section == "backbone" else ""
            flat = prefix + "_".join(path)
            if flat in args:
                got = args[flat]
            else:  # a table the constructor takes whole
                got = args[prefix + path[0]]
                for part in path[1:]:
                    got = got[part]
            assert got == _plain(OmegaConf.select(cfg, key)), (dataset, key)


@pytest.mark.parametrize("name", sorted(PAPER_PRESETS))
def test_constructor_defaults_are_the_paper_preset(name):
    cls = PAPER_PRESETS[name]
    args = method_arguments(cls, load_config([f"method={name}"]))
    defaults = {p.name: p.default for p in inspect.signature(cls).parameters.values()}
    # the run's category is not a preset value; DFD's empty foreground table means "all"
    args.pop("category", None)
    if name == "dfd":
        assert args.pop("foreground") == {} and defaults["foreground"] == "all"
    for key, value in args.items():
        default = defaults[key]
        assert (list(default) if isinstance(default, tuple) else default) == value, key
