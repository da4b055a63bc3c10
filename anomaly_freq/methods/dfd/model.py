"""DFD: dual-path frequency discriminators for few-shot anomaly detection (Bai et al., 2024).

Every image is split by a one-level Gaussian pyramid into a low band up(down(I)) and a high
band I − low; both bands go through a frozen backbone with local aggregation and a shared
linear adaptor. A Gaussian discriminator learns to separate adapted features from copies with
N(0, 0.015²) noise; a Perlin discriminator (token MLP + one ViT block) learns to segment
image-level pseudo-anomalies. At test time the negated logits of each discriminator, upsampled
and smoothed, are summed over the bands, and the two discriminators' maps are fused.
See the dfd.md spec for the specification and the choices made (§13).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from anomaly_freq.contract import AnomalyModule, full_precision
from anomaly_freq.errors import AfreqError
from anomaly_freq.freq import gaussian_pyramid_split, gaussian_smooth
from anomaly_freq.methods.dfd import losses
from anomaly_freq.methods.dfd.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FeatureExtractor,
    build_backbone,
)
from anomaly_freq.methods.dfd.fusion import FUSIONS, closed_form_constants
from anomaly_freq.methods.dfd.networks import (
    FeatureAdaptor,
    GaussianDiscriminator,
    PerlinDiscriminator,
)
from anomaly_freq.methods.dfd.synthesis import PseudoAnomalies, TrainingSample
from anomaly_freq.registry import register_method

BANDS = ("low", "high")


@register_method("dfd")
class DFD(AnomalyModule):
    """Few-shot DFD.

    The arguments are the keys of ``configs/method/dfd.yaml``, which documents them, with its
    values as defaults (``backbone.name`` → ``backbone_name``, ``synth.dtd_root`` →
    ``dtd_root``). ``foreground`` is all | above | below, or a table category → that (the
    config's per-dataset table), looked up with ``category`` (``unified`` when one model serves
    every category: absent from the table, the whole run takes all); ``image_size`` is the side
    of the images the method sees and ``shot_fill`` the run's ``dataset.shot_fill``."""

    learning_type = "few_shot"
    speed_modules = ("features", "adaptor", "gaussian", "perlin")

    def __init__(self, *, bgr: bool = True, pyramid_mode: str = "opencv",
                 feature_dim: int = 1536, gaussian_hidden: int = 1024, vit_heads: int = 16,
                 margin: float = 0.5, noise_std: float = 0.015, lambda_perlin: float = 1.0,
                 lambda_sim: float = 1.0, anomaly_prob: float = 0.7, beta_max: float = 0.8,
                 fixed_anomalies: bool = True, foreground: str | Mapping[str, str] = "all",
                 lr_adaptor: float = 5.0e-4, lr_gaussian: float = 2.0e-4,
                 lr_perlin: float = 1.0e-4, weight_decay: float = 1.0e-5,
                 lr_min: float = 4.0e-5, cosine_t_max: int | None = None,
                 smoothing_sigma: float = 4.0, fusion: str = "standardise",
                 stats_batches: int = 4, backbone_name: str = "wide_resnet50_2.tv_in1k",
                 backbone_layers: Sequence[int] = (2, 3), backbone_pretrained: bool = True,
                 backbone_weights: str | None = None, dtd_root: str | None = None,
                 image_size: int = 256, category: str | None = None, shot_fill: str = "code",
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.side = int(image_size)
        self.bgr, self.pyramid_mode = bool(bgr), str(pyramid_mode)
        self.margin, self.noise_std = float(margin), float(noise_std)
        self.lambda_perlin, self.lambda_sim = float(lambda_perlin), float(lambda_sim)
        self.sigma, self.fusion = float(smoothing_sigma), str(fusion)
        if self.fusion not in FUSIONS:
            raise AfreqError(f"method.fusion={self.fusion} is unknown; valid: {', '.join(FUSIONS)}")
        self.lr_adaptor, self.lr_gaussian = float(lr_adaptor), float(lr_gaussian)
        self.lr_perlin, self.lr_min = float(lr_perlin), float(lr_min)
        self.weight_decay, self.cosine_t_max = float(weight_decay), cosine_t_max
        self.stats_batches, self.backbone_pretrained = int(stats_batches), bool(backbone_pretrained)
        dim = int(feature_dim)
        layers = tuple(int(i) for i in backbone_layers)
        self.features = FeatureExtractor(
            build_backbone(str(backbone_name), layers, self.backbone_pretrained,
                           backbone_weights or None), dim)
        with torch.no_grad():
            probe = self.features.backbone(torch.zeros(1, 3, self.side, self.side))
        self.grid = tuple(probe[0].shape[-2:])
        self.adaptor = FeatureAdaptor(dim)
        self.gaussian = GaussianDiscriminator(dim, int(gaussian_hidden))
        self.perlin = PerlinDiscriminator(dim, self.grid[0] * self.grid[1], int(vit_heads))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        # per discriminator (Perlin, Gaussian): pixel mean, pixel std, closed-form a and c
        self.register_buffer("fusion_stats", torch.tensor([[0.0, 1.0, 1.0, 0.0]] * 2))
        if isinstance(foreground, Mapping):
            foreground = foreground.get(category)
        self.synth = PseudoAnomalies(
            float(anomaly_prob), self.side, dtd_root, (0.0, float(beta_max)),
            str(foreground or "all"), bool(fixed_anomalies), self.seed,
            spare_corners=shot_fill != "code")

    # ---------------------------------------------------------------- features

    def bands(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """ImageNet-normalised low and high bands of [0,1] RGB images (split first, fp32)."""
        if self.bgr:
            images = images.flip(1)  # the code reads BGR and normalises with RGB constants
        with full_precision(images):
            low, high = gaussian_pyramid_split(images.float(), mode=self.pyramid_mode)
            return {"low": (low - self.mean) / self.std, "high": (high - self.mean) / self.std}

    def adapted(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Adapted token features (B·T)×D per band; one backbone pass for both bands."""
        bands = self.bands(images)
        feats = self.features(torch.cat([bands["low"], bands["high"]]))
        # halves by a view, not chunk(2): torch.export keeps the batch size dynamic
        low, high = self.adaptor(feats).unflatten(0, (2, -1)).unbind(0)
        return {"low": low, "high": high}

    def train(self, mode: bool = True) -> DFD:
        super().train(mode)
        self.features.train(False)
        return self

    # ---------------------------------------------------------------- training

    def configure_optimizers(self) -> Any:
        groups = [
            {"params": self.adaptor.parameters(), "lr": self.lr_adaptor, "weight_decay": 0.0},
            {"params": self.gaussian.parameters(), "lr": self.lr_gaussian,
             "weight_decay": self.weight_decay},
            {"params": self.perlin.parameters(), "lr": self.lr_perlin,
             "weight_decay": self.weight_decay},
        ]
        optimizer = torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-8)
        epochs = self.trainer.max_epochs if self._trainer is not None else 80
        t_max = int(self.cosine_t_max) if self.cosine_t_max else max(1, (epochs or 80) - 4)
        floor = self.lr_min

        def cosine(base: float) -> Any:
            # CosineAnnealingLR's closed form; past t_max it rises again, as torch's does
            return lambda epoch: (floor + (base - floor) * (1 + math.cos(math.pi * epoch / t_max))
                                  / 2) / base

        lambdas = [lambda epoch: 1.0, cosine(groups[1]["lr"]), cosine(groups[2]["lr"])]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "epoch"}}

    def protocol(self) -> dict[str, Any]:
        return {"foreground": self.synth.foreground, "fusion": self.fusion,
                "bgr": self.bgr, "backbone_pretrained": self.backbone_pretrained}

    def code_shot_fill(self) -> str:
        # the code fills with the top-left colour exactly where it thresholds a foreground
        return "zero" if self.synth.foreground == "all" else "corner"

    def train_transform(self) -> TrainingSample:
        """Pseudo-anomalies per sample, in the loader workers."""
        return TrainingSample(self.synth)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        batch = self.with_synthesis(batch)
        clean, augmented = batch["image"], batch["augmented"]
        mask, labels = batch["synth_mask"], batch["synth_label"]
        b, _, h, w = clean.shape
        both = self.adapted(torch.cat([clean, augmented]))
        token_mask = F.adaptive_max_pool2d(mask, self.grid)
        total_gau = total_pix = total_cls = total_sim = clean.new_zeros(())
        noise = self.step_generator()
        for band in BANDS:
            q_clean, q_aug = both[band].chunk(2)
            noisy = q_clean + self.noise_std * torch.randn(
                q_clean.shape, generator=noise, device=q_clean.device, dtype=q_clean.dtype)
            scores = self.gaussian(torch.cat([q_clean, noisy]))
            logits = self.perlin(q_aug).view(b, 1, *self.grid)
            with full_precision(logits):
                scores, logits = scores.float(), logits.float()
                total_gau = total_gau + losses.gaussian_loss(*scores.chunk(2), self.margin)
                logits = F.interpolate(logits, size=(h, w), mode="bilinear",
                                       align_corners=False)
                total_pix = total_pix + losses.perlin_pixel_loss(logits, mask, self.margin)
                total_cls = total_cls + losses.perlin_image_loss(logits, labels)
                total_sim = total_sim + losses.similarity_loss(q_aug.float(), q_clean.float(),
                                                               token_mask)
        perlin = 0.5 * (total_pix + total_cls)
        loss = total_gau + self.lambda_perlin * perlin + self.lambda_sim * total_sim
        self.log_dict({"loss": loss, "loss_gaussian": total_gau, "loss_perlin": perlin,
                       "loss_similarity": total_sim}, on_step=False, on_epoch=True,
                      batch_size=b)
        return loss

    def prepare_for_inference(self) -> None:
        """Fusion statistics from clean training images (never from the test set)."""
        source = self.trainer.train_dataloader
        limit = self.stats_batches
        if source is None or limit <= 0:
            return
        # a loader of its own, so that training's shuffle order is left untouched and every
        # call sees the same images
        loader = DataLoader(source.dataset, batch_size=source.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(self.seed))
        was_training = self.training
        self.eval()
        perlin_maps, gauss_maps = [], []
        # the precision the test maps are computed in, so the statistics fit them
        with torch.no_grad(), self.trainer.precision_plugin.predict_step_context():
            for i, batch in enumerate(loader):
                if i >= limit:
                    break
                p, g = self.discriminator_maps(batch["image"].to(self.device))
                perlin_maps.append(p[:, 0])
                gauss_maps.append(g[:, 0])
        self.train(was_training)
        for row, maps in enumerate((torch.cat(perlin_maps), torch.cat(gauss_maps))):
            a, c = closed_form_constants(maps)
            std = maps.double().std().clamp_min(1e-12)
            self.fusion_stats[row] = torch.stack([maps.double().mean(), std, a, c]).float()

    # ---------------------------------------------------------------- inference

    def discriminator_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, G): negated, upsampled, smoothed logits summed over the bands, B×1×H×W each."""
        b, _, h, w = images.shape
        q = self.adapted(images)
        maps = []
        for net in (self.perlin, self.gaussian):
            total = 0
            for band in BANDS:
                logits = -net(q[band]).view(b, 1, *self.grid)
                with full_precision(logits):
                    up = F.interpolate(logits.float(), size=(h, w), mode="bilinear",
                                       align_corners=False)
                    total = total + gaussian_smooth(up, self.sigma)
            maps.append(total)
        return maps[0], maps[1]

    def fuse(self, perlin: torch.Tensor, gauss: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.fusion == "raw":
            return 0.5 * (perlin + gauss), 0.5 * (perlin.flatten(1).amax(1)
                                                  + gauss.flatten(1).amax(1))
        parts = []
        for row, part in enumerate((perlin, gauss)):
            mean, std, a, c = self.fusion_stats[row]
            parts.append((part - mean) / std if self.fusion == "standardise" else a * part - c)
        amap = 0.5 * (parts[0] + parts[1])
        score = 0.5 * (parts[0].flatten(1).amax(1) + parts[1].flatten(1).amax(1))
        return amap, score

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> dict[str, torch.Tensor]:
        perlin, gauss = self.discriminator_maps(batch["image"])
        amap, score = self.fuse(perlin, gauss)
        return {
            "anomaly_map": amap,
            "pred_score": score,
            # raw per-discriminator maps and maxima: eval.normalisation=minmax fuses these with
            # test-set min–max, the paper's (transductive) protocol
            "map_parts": torch.cat([perlin, gauss], dim=1),
            "score_parts": torch.stack([perlin.flatten(1).amax(1), gauss.flatten(1).amax(1)], 1),
        }
