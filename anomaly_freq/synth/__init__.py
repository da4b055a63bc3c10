"""Training-time anomaly synthesis shared by the methods.

Images are single float RGB tensors 3×H×W in [0, 1]; batches are made by the caller, one draw
per image. Every synthesiser takes a ``torch.Generator`` or an int seed, is deterministic under
it, and returns (corrupted image, exact binary mask 1×H×W of the changed region).
"""

from anomaly_freq.synth.cutpaste import cutout, cutpaste_small, large_cutpaste
from anomaly_freq.synth.foreground import otsu_foreground
from anomaly_freq.synth.noise import feature_noise
from anomaly_freq.synth.perlin import perlin_mask, perlin_noise, perlin_texture_anomaly
from anomaly_freq.synth.rng import as_generator
from anomaly_freq.synth.textures import TextureSource, augment_texture

__all__ = [
    "TextureSource", "as_generator", "augment_texture", "cutout", "cutpaste_small",
    "feature_noise", "large_cutpaste", "otsu_foreground", "perlin_mask", "perlin_noise",
    "perlin_texture_anomaly",
]
