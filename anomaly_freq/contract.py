"""The plugin contract: what every method, the data layer and the evaluator agree on.

This module imports nothing from the package, so any layer may import it.

A method is a LightningModule that learns from batches of normal images (`Batch`) and, in
`predict_step`, returns per image a raw `anomaly_map` (B×1×H×W, higher = more anomalous) and a
raw `pred_score` (B) (`Prediction`). It never computes metrics and never normalises with
test-set statistics: the evaluator owns both. Its constructor takes keyword arguments with
defaults and never sees a config object; `anomaly_freq.config.method_arguments` builds them
from the run configuration. Register it with ``@register_method("name")`` and give it
defaults in ``configs/method/<name>.yaml`` (or a ``default_config`` dict for out-of-tree
plugins).

Training-time synthesis that works on one image at a time belongs in `train_transform`: the
training dataset applies it in loader workers (`anomaly_freq.data.pipeline`), its draws from
`keyed_generator` keyed by (seed, epoch, index).
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Literal, Protocol, TypedDict

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset, default_collate

LearningType = Literal["one_class", "few_shot"]


class Batch(TypedDict, total=False):
    """A batch from the data layer. ``image``: float32 B×3×H×W RGB in [0, 1]; ``mask``: float32
    B×1×H×W in {0, 1}; ``label``: int64 B (0 normal, 1 anomalous); ``path`` and ``category``:
    one string per image, bookkeeping that a method must not read (one unified model scores
    several categories). Training batches may carry what `train_transform` adds."""

    image: torch.Tensor
    mask: torch.Tensor
    label: torch.Tensor
    path: list[str]
    category: list[str]


class Prediction(TypedDict):
    """What `predict_step` returns: raw maps B×1×H×W and scores B, higher = more anomalous."""

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor


class SampleTransform(Protocol):
    """``(item, generator, source) → item`` for one training sample (``source``: the clean
    training set, for methods that borrow another image)."""

    def __call__(self, item: dict[str, Any], generator: torch.Generator,
                 source: Dataset) -> dict[str, Any]: ...


def _key_seed(*key: object) -> int:
    """A 63-bit seed hashed from ``key`` (stable across processes and Python runs)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def keyed_generator(*key: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded by a hash of ``key``: equal keys, equal draws.

    Training synthesis keys it by ``(seed, epoch, sample index)``, so a sample's corruption does
    not depend on which worker process or device draws it; feature-space noise on the device by
    ``(seed, global step, rank)``.

    >>> a, b = keyed_generator(0, 1, 2), keyed_generator(0, 1, 2)
    >>> bool(torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b)))
    True
    """
    return torch.Generator(device=device).manual_seed(_key_seed(*key))


class AnomalyModule(pl.LightningModule):
    """Base class of all methods; subclasses implement `training_step` and `predict_step`."""

    learning_type: ClassVar[LearningType] = "one_class"
    #: Trainer keyword arguments the method needs (they override the run configuration).
    trainer_arguments: ClassVar[dict[str, Any]] = {}
    #: Defaults for plugins that ship no YAML file; merged into the run configuration.
    default_config: ClassVar[dict[str, Any]] = {}
    registry_name: ClassVar[str]
    #: Under ``trainer.strategy=ddp``: parameters that some backward passes leave unused (GANs).
    ddp_find_unused_parameters: ClassVar[bool] = False
    #: Submodules that ``method.channels_last`` and ``method.compile`` apply to.
    speed_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, seed: int = 0) -> None:
        """``seed``: the run's seed, which keys `with_synthesis` and `step_generator`."""
        super().__init__()
        self.seed = int(seed)

    def predict_step(self, batch: Batch, batch_idx: int = 0) -> Prediction:
        """Return ``{"anomaly_map": B×1×H×W, "pred_score": B}`` for ``batch["image"]``."""
        raise NotImplementedError

    def validation_step(self, batch: Batch, batch_idx: int = 0) -> Prediction:
        """The test-set monitor's scoring (``eval.test_every_n_epochs``): `predict_step`."""
        return self.predict_step(batch, batch_idx)

    def on_validation_start(self) -> None:
        self.prepare_for_inference()
        self.on_predict_start()

    def on_validation_end(self) -> None:
        self.on_predict_end()

    def protocol(self) -> dict[str, Any]:
        """Effective values of the method's settings that change the protocol (what an
        ``auto`` resolved to, say), recorded in protocol.json."""
        return {}

    def code_shot_fill(self) -> str | None:
        """What ``dataset.shot_fill=code`` means for this method and category: the fill
        (``zero`` | ``corner``) its official code gives rotated training copies; None when the
        code has no rotated copies."""
        return None

    def train_transform(self) -> SampleTransform | None:
        """The per-sample training synthesis the dataset applies in loader workers, if any."""
        return None

    def with_synthesis(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch`` with `train_transform` applied, here in the main process, if the loader
        did not (a loader other than AnomalyDataModule's); draws keyed by (seed, epoch, step,
        rank, position), textures borrowed from the batch."""
        transform = self.train_transform()
        if transform is None or batch.get("synthesised") is not None:
            return batch
        n = len(batch["image"])
        clean = [{k: v[i].cpu() if torch.is_tensor(v) else v[i]
                  for k, v in batch.items() if _per_sample(v, n)} for i in range(n)]
        rank = self._rank()
        done = [transform(item, keyed_generator(self.seed, "in-step", self.current_epoch,
                                                self.global_step, rank, i), clean)
                for i, item in enumerate(clean)]
        return self.transfer_batch_to_device(default_collate(done), self.device, 0)

    def step_generator(self) -> torch.Generator:
        """Generator on the model's device for batched draws (feature noise), seeded by
        (seed, global step, rank): reproducible, and different on every rank."""
        return keyed_generator(self.seed, "step", self.global_step, self._rank(),
                               device=self.device)

    def _rank(self) -> int:
        return self.global_rank if self._trainer is not None else 0

    def apply_speed_options(self, *, channels_last: bool = False, compile: bool = False,
                            compile_backend: str | None = None) -> None:
        """Channels-last memory layout and torch.compile (in place, so the state dict keeps its
        keys; ``compile_backend`` None = inductor) on `speed_modules`; the engine passes
        ``method.channels_last`` and ``method.compile``."""
        for name in self.speed_modules:
            module = getattr(self, name)
            if channels_last:
                module.to(memory_format=torch.channels_last)
            if compile:
                module.compile(**({"backend": compile_backend} if compile_backend else {}))

    def export_blocker(self) -> str | None:
        """Why `afreq export` cannot capture `predict_step` as a fixed graph (random draws at
        inference, say), naming the setting to change; None when it can."""
        return None

    def prepare_for_inference(self) -> None:
        """Derive what scoring needs from training data (statistics, say). Called after
        training and, when the test-set monitor is on, before each of its evaluations: those
        run after an epoch's last batch, before ``on_train_epoch_end``."""

    def on_train_end(self) -> None:
        self.prepare_for_inference()


def _per_sample(value: Any, n: int) -> bool:
    return (torch.is_tensor(value) and value.ndim > 0 and len(value) == n) or (
        isinstance(value, list) and len(value) == n)


def full_precision(like: torch.Tensor) -> AbstractContextManager:
    """Autocast off on ``like``'s device: losses, maps and scores stay float32 under AMP."""
    return torch.autocast(like.device.type, enabled=False)


def check_outputs(outputs: Any, batch: dict[str, Any], method: str) -> None:
    """Raise a plain error when a method breaks the output contract (a plugin author's bug)."""
    if not isinstance(outputs, dict) or not {"anomaly_map", "pred_score"} <= outputs.keys():
        raise TypeError(f"method '{method}' predict_step must return anomaly_map and pred_score")
    amap, score = outputs["anomaly_map"], outputs["pred_score"]
    n, _, h, w = batch["image"].shape
    if amap.ndim != 4 or amap.shape[0] != n or amap.shape[1] != 1:
        raise TypeError(f"method '{method}' anomaly_map must be B×1×H×W, got {tuple(amap.shape)}")
    if score.shape != (n,):
        raise TypeError(
            f"method '{method}' pred_score must have shape ({n},), got {tuple(score.shape)}"
        )
