"""OCR-GAN: omni-frequency channel-selection reconstruction GAN (Liang et al., IEEE TIP 2023).

Each image is split into a low band (one Gaussian-pyramid step) and a high band; a U-Net per band,
coupled by channel selection after every encoder level, reconstructs the image as the sum of the
two branch outputs. A DCGAN discriminator is trained on real images against reconstructions and
CutPaste + Cutout forgeries. The image score is 0.9 · reconstruction error + 0.1 · distance of
the discriminator's 100-d features. See the ocrgan.md spec and
``configs/method/ocrgan.yaml`` for every option.

Defaults (the spec's recommendations): the code's frequency split — uint8 saturating high band
with per-band scaling, so the target becomes ``max(I, blur)/127.5 − 2`` — with the paper's
learned channel selection (deterministic, trained, checkpointed) and D in train mode throughout.
``method.faithful=true``: the official code in every respect — also channel-selection weights
drawn at random on every forward (so inference is stochastic) and D's BatchNorm frozen after
epoch 1. ``method.fd_mode=signed``: the corrected split, whose bands sum back to the image (the
``ocrgan_fast`` preset).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from anomaly_freq.contract import AnomalyModule, full_precision, keyed_generator
from anomaly_freq.errors import AfreqError
from anomaly_freq.freq import gaussian_pyramid_split, gaussian_smooth
from anomaly_freq.methods.ocrgan.networks import (
    CS_MODES,
    Discriminator,
    TwoBranchUNet,
    init_weights,
)
from anomaly_freq.registry import register_method
from anomaly_freq.synth import cutout, cutpaste_small

FD_MODES = ("signed", "official")
FORGERIES = ("both", "cutpaste", "cutout", "none")
REFERENCE_SIZE = 256  # Cutout's 20 px hole is at 256×256


def decouple(images: torch.Tensor, mode: str = "signed") -> tuple[torch.Tensor, ...]:
    """(low band, high band, target) of B×3×H×W [0,1] images, as the networks see them.

    ``signed``: low = blur(I) mapped to [−1, 1], high = (I − blur(I))/0.5, so low + high is the
    image in [−1, 1] and the target. ``official``: the code's uint8 path — the image quantised to
    0…255, a rounded blur, high = max(I − blur, 0), each band mapped by /127.5 − 1 on its own,
    target = their sum (in [−2, 0]; spec §3, A2/A3). Always float32, also under autocast.
    """
    with full_precision(images):
        images = images.float()
        if mode == "signed":
            low, high = gaussian_pyramid_split(images)
            return (low - 0.5) / 0.5, high / 0.5, (images - 0.5) / 0.5
        if mode == "official":
            grey_levels = torch.round(images.clamp(0, 1) * 255)
            low, high = gaussian_pyramid_split(grey_levels, saturate=True)
            low_n, high_n = low / 127.5 - 1, high / 127.5 - 1
            return low_n, high_n, low_n + high_n
    raise AfreqError(f"method.fd_mode '{mode}' is unknown; valid: auto, {', '.join(FD_MODES)}")


def _resolve(value: str, faithful: bool, default: str, official: str, valid: tuple[str, ...],
             key: str) -> str:
    value = str(value)
    if value == "auto":
        return official if faithful else default
    if value not in valid:
        raise AfreqError(f"method.{key} '{value}' is unknown; valid: auto, {', '.join(valid)}")
    return value


class TrainingSample:
    """OCR-GAN's per-sample transform: the frequency bands (``low``, ``high``, ``real``, as
    `decouple` gives them) and ``forged``, the image with its forgeries, in [−1, 1]."""

    def __init__(self, fd_mode: str, forgeries: str, cutpaste_area: tuple[float, float],
                 cutout_side: int) -> None:
        self.fd_mode, self.forgeries = fd_mode, forgeries
        self.cutpaste_area, self.cutout_side = cutpaste_area, cutout_side

    def forge(self, image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One CutPaste (2–15 % of the image) and/or one Cutout of a [0, 1] image, in [−1, 1]."""
        if self.forgeries in ("both", "cutpaste"):
            image, _ = cutpaste_small(image, g, area=self.cutpaste_area)
        if self.forgeries in ("both", "cutout"):
            image, _ = cutout(image, g, side=self.cutout_side)
        return (image - 0.5) / 0.5

    def __call__(self, item: dict[str, Any], g: torch.Generator, source: Any) -> dict[str, Any]:
        image = item["image"]
        low, high, real = (t[0] for t in decouple(image[None], self.fd_mode))
        item = {**item, "low": low, "high": high, "real": real}
        return item if self.forgeries == "none" else {**item, "forged": self.forge(image, g)}


@register_method("ocrgan")
class OCRGAN(AnomalyModule):
    """Two-branch frequency U-Net generator + DCGAN discriminator, trained adversarially.

    The arguments are the keys of ``configs/method/ocrgan.yaml``, which documents them, with its
    values as defaults (``model.ngf`` → ``ngf``); ``image_size`` is the side of the images the
    networks see and ``batch_size`` the training batch size (``drop_last``)."""

    speed_modules = ("generator", "discriminator")
    ddp_find_unused_parameters = True  # the G step leaves D's parameters without gradients

    def __init__(self, *, faithful: bool = False, fd_mode: str = "auto", cs_mode: str = "auto",
                 d_bn_after_epoch1: str = "auto", lr: float = 2.0e-4, beta1: float = 0.5,
                 beta2: float = 0.999, weight_decay: float = 0.0, w_con: float = 50.0,
                 w_adv: float = 1.0, w_lat: float = 1.0, d_latent_term: bool = True,
                 forgeries: str = "both", cutpaste_area: Sequence[float] = (0.02, 0.15),
                 cutout_side: int = 20, d_reinit_below: float = 1.0e-5, drop_last: bool = True,
                 score_weight: float = 0.9, score_content: str = "squared",
                 map_sigma: float = 4.0, eval_draws: int = 1, eval_seed: int = -1,
                 ngf: int = 64, ndf: int = 64, nz: int = 100, levels: int = 0,
                 cs_reduction: int = 2, cs_min_dim: int = 32, image_size: int = 256,
                 batch_size: int = 32, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.automatic_optimization = False
        self.side = int(image_size)
        if self.side < 16 or self.side & (self.side - 1):
            raise AfreqError(f"OCR-GAN needs a power-of-two image side of at least 16 (the "
                             f"paper uses 256), got {self.side}; set dataset.image_size")
        faithful = bool(faithful)
        # the spec's default for Table I is the code's split, faithful or not (ocrgan.md §3)
        self.fd_mode = _resolve(fd_mode, faithful, "official", "official", FD_MODES, "fd_mode")
        self.cs_mode = _resolve(cs_mode, faithful, "learned", "random", CS_MODES, "cs_mode")
        self.freeze_d_bn = _resolve(d_bn_after_epoch1, faithful, "train", "frozen",
                                    ("train", "frozen"), "d_bn_after_epoch1") == "frozen"
        self.forgeries = str(forgeries)
        if self.forgeries not in FORGERIES:
            raise AfreqError(f"method.forgeries '{self.forgeries}' is unknown; valid: "
                             f"{', '.join(FORGERIES)}")
        self.score_content = str(score_content)
        if self.score_content not in ("squared", "l1"):
            raise AfreqError(f"method.score_content '{self.score_content}' is unknown; "
                             "valid: squared, l1")
        self.eval_draws = int(eval_draws)
        if self.eval_draws < 1:
            raise AfreqError(f"method.eval_draws={self.eval_draws} must be at least 1")
        most = int(math.log2(self.side))
        depth = int(levels) or most
        if not 2 <= depth <= most:
            raise AfreqError(f"model.levels={levels} must be between 2 and "
                             f"log2(image side) = {most} (0 = that maximum)")

        self.generator = TwoBranchUNet(int(ngf), depth, self.cs_mode, int(cs_reduction),
                                       int(cs_min_dim))
        self.discriminator = Discriminator(self.side, int(ndf), int(nz))
        init_weights(self.generator)
        init_weights(self.discriminator)

        self.lr, self.betas = float(lr), (float(beta1), float(beta2))
        self.weight_decay = float(weight_decay)
        self.w_con, self.w_adv, self.w_lat = float(w_con), float(w_adv), float(w_lat)
        self.d_latent_term = bool(d_latent_term)
        self.d_reinit_below = float(d_reinit_below)
        self.score_weight = float(score_weight)
        self.map_sigma = float(map_sigma)
        self.cutpaste_area = (float(cutpaste_area[0]), float(cutpaste_area[1]))
        self.cutout_side = max(1, round(float(cutout_side) * self.side / REFERENCE_SIZE))
        self.drop_last = bool(drop_last)
        self.batch_size = int(batch_size)
        self.eval_seed = int(eval_seed)

    # ---------------------------------------------------------------- shared path

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, target) of B×3×H×W [0,1] RGB images, in the networks' range."""
        low, high, target = decouple(images, self.fd_mode)
        return self.generator(low, high), target

    # ---------------------------------------------------------------- training

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        kwargs = {"lr": self.lr, "betas": self.betas, "weight_decay": self.weight_decay}
        return [torch.optim.Adam(self.generator.parameters(), **kwargs),
                torch.optim.Adam(self.discriminator.parameters(), **kwargs)]

    def protocol(self) -> dict[str, Any]:
        return {"fd_mode": self.fd_mode, "cs_mode": self.cs_mode,
                "d_bn_after_epoch1": "frozen" if self.freeze_d_bn else "train"}

    def export_blocker(self) -> str | None:
        if self.cs_mode != "random":
            return None
        return ("its random channel selection (method.cs_mode=random, or auto with "
                "method.faithful=true) draws new weights from torch's RNG on every forward, "
                "which an exported graph cannot reproduce; export a run with cs_mode=learned "
                "or none")

    def train_transform(self) -> TrainingSample:
        """Bands and forgeries per sample, in the loader workers."""
        return TrainingSample(self.fd_mode, self.forgeries, self.cutpaste_area, self.cutout_side)

    def on_train_epoch_start(self) -> None:
        if self.freeze_d_bn and self.current_epoch >= 1:
            # the official test() puts D in eval mode and training never switches it back
            self.discriminator.eval()

    def _skip(self, n: int) -> bool:
        """The code drops incomplete batches; BatchNorm cannot train on a single image."""
        if n < 2:
            return True
        if not self.drop_last or n >= self.batch_size:
            return False
        loader = self.trainer.train_dataloader if self._trainer is not None else None
        sampler = getattr(loader, "sampler", None)  # under DDP: this rank's share
        return sampler is not None and len(sampler) >= self.batch_size

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        batch = self.with_synthesis(batch)
        images = batch["image"]
        if self._skip(images.shape[0]):
            return
        opt_g, opt_d = self.optimizers()
        low, high, real = batch["low"], batch["high"], batch["real"]
        if self.cs_mode == "random":  # the code's random channel selection, drawn on the device
            self.generator.set_generator(self.step_generator())

        # generator step: 50·L1 + 1·BCE(D(x̂), 1) + 1·‖f(x̂) − f(x)‖²
        self.toggle_optimizer(opt_g)
        fake = self.generator(low, high)
        prob_fake, feat_fake = self.discriminator(fake)
        with torch.no_grad():
            _, feat_real = self.discriminator(real)
        with full_precision(fake):
            loss_con = F.l1_loss(fake.float(), real)
            loss_adv = _bce(prob_fake, 1.0)
            loss_lat = F.mse_loss(feat_fake.float(), feat_real.float())
        loss_g = self.w_con * loss_con + self.w_adv * loss_adv + self.w_lat * loss_lat
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        # discriminator step, from fresh forwards: real → 1, reconstruction and forgeries → 0
        self.toggle_optimizer(opt_d)
        fake = fake.detach()
        prob_real, feat_real = self.discriminator(real)
        prob_rec, feat_rec = self.discriminator(fake)
        loss_d = _bce(prob_real, 1.0) + _bce(prob_rec, 0.0)
        if self.forgeries != "none":
            loss_d = loss_d + _bce(self.discriminator(batch["forged"])[0], 0.0)
        if self.d_latent_term:  # inherited from Skip-GANomaly's code (A11)
            with full_precision(feat_rec):
                loss_d = loss_d + self.w_lat * F.mse_loss(feat_rec.float(), feat_real.float())
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        if self._won(loss_d):  # the code restarts a discriminator that has won
            init_weights(self.discriminator, keyed_generator(self.seed, "reinit",
                                                             self.global_step))

        if not (torch.isfinite(loss_g) and torch.isfinite(loss_d)):
            raise AfreqError(
                f"OCR-GAN training diverged at epoch {self.current_epoch}, step "
                f"{self.global_step}: loss_g={float(loss_g)}, loss_d={float(loss_d)} "
                f"(method.lr={self.lr}); lower method.lr")
        n = images.shape[0]
        self.log_dict({"loss_g": loss_g, "loss_d": loss_d, "loss_con": loss_con},
                      prog_bar=True, on_step=True, on_epoch=True, batch_size=n)

    def _won(self, loss_d: torch.Tensor) -> bool:
        """D's loss below ``d_reinit_below``, averaged over DDP ranks so that all of them
        restart D together (from the same draws) and the replicas stay equal."""
        if self.d_reinit_below <= 0:
            return False
        loss = loss_d.detach()
        if self._trainer is not None:
            loss = self.trainer.strategy.reduce(loss, reduce_op="mean")
        return float(loss) < self.d_reinit_below

    # ---------------------------------------------------------------- inference

    def on_predict_start(self) -> None:
        if self.cs_mode == "random" and self.eval_seed >= 0:
            rng = torch.Generator(device=self.device).manual_seed(self.eval_seed)
            self.generator.set_generator(rng)

    def on_predict_end(self) -> None:
        self.generator.set_generator(None)  # back to training's RNG (the test-set monitor)

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> dict[str, torch.Tensor]:
        """Raw score 0.9 · content error + 0.1 · feature error, and a pixel map.

        The pixel map (channel mean of |x − x̂|, Gaussian-smoothed by ``method.map_sigma``) is
        not part of the paper, which reports image AUROC only; it gives OCR-GAN pixel metrics
        here. No min-max normalisation: that needs test statistics and belongs to the evaluator.
        """
        images = batch["image"]
        low, high, real = decouple(images, self.fd_mode)
        _, feat_real = self.discriminator(real)
        score = images.new_zeros(images.shape[0])
        amap = images.new_zeros(images.shape[0], 1, *images.shape[-2:])
        for _ in range(self.eval_draws):  # > 1 only helps the random channel selection (A25)
            fake = self.generator(low, high)
            _, feat_fake = self.discriminator(fake)
            with full_precision(fake):
                diff = fake.float() - real
                content = diff.square() if self.score_content == "squared" else diff.abs()
                lat = (feat_fake.float() - feat_real.float()).square().mean(1)
                score += (self.score_weight * content.mean(dim=(1, 2, 3))
                          + (1 - self.score_weight) * lat)
                amap += diff.abs().mean(1, keepdim=True)
        score, amap = score / self.eval_draws, amap / self.eval_draws
        if self.map_sigma > 0:
            with full_precision(amap):
                amap = gaussian_smooth(amap, self.map_sigma, border="mirror")
        return {"anomaly_map": amap, "pred_score": score}


def _bce(probability: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy against a constant label, in fp32 (it is unsafe under autocast);
    the discriminator computes its probability in fp32 too."""
    with full_precision(probability):
        p = probability.float()
        return F.binary_cross_entropy(p, torch.full_like(p, target))
