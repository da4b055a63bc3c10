"""DFD cost at the paper's scale: WRN-50-2, 256×256, batch 8 (random weights; speed only).

Each device is measured in a fresh spawned process so that its peak memory is its own.
One training iteration = 4 backbone passes of 8 images (clean/augmented × low/high), the
adaptor, both discriminators, the losses, backward and the Adam step; an epoch of the code
is 10·k iterations for k shots (80 rotated copies per shot, batch 8).
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time

import torch

from benchmarks.common import Section

BATCH, SIZE = 8, 256
PAPER_S_PER_IMAGE = 0.09  # journal's cost table, RTX 3090
PAPER_S_PER_EPOCH = 10.1


def _measure(device: str, queue) -> None:
    from anomaly_freq.methods.dfd import DFD

    torch.manual_seed(0)
    model = DFD(backbone_pretrained=False, category="weave").to(device)
    model.log_dict = lambda *args, **kwargs: None  # no Trainer attached
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    batch = {"image": images.to(device), "path": [f"shot{i % 2}.png" for i in range(BATCH)],
             "rotation": torch.linspace(-80, 80, BATCH)}

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def train_step() -> None:
        model.train()
        loss = model.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model.predict_step({"image": batch["image"]})

    repeats = 1 if device == "cpu" else 5
    result = {}
    for name, fn in (("train", train_step), ("infer", infer)):
        fn()  # warm-up
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        result[name] = min(times)
        if device == "cuda":
            result[f"{name}_mem"] = torch.cuda.max_memory_allocated() / 2**30
    result["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
    queue.put(result)


def _in_child(device: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_measure, args=(device, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def run() -> Section:
    section = Section(
        "DFD cost: WideResNet-50-2, 256×256, batch 8 (36.2 M trainable, 24.9 M frozen)",
        ["device", "s / training iteration", "s / epoch, 1 / 2 / 4 shots",
         "inference images/s", "s / image", "peak memory"],
    )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        r = _in_child(device)
        epoch = " / ".join(f"{10 * k * r['train']:.0f}" for k in (1, 2, 4))
        memory = (f"{r['train_mem']:.1f} GiB GPU (training), {r['infer_mem']:.1f} GiB (inference)"
                  if device == "cuda" else f"{r['rss']:.1f} GiB RSS (process)")
        name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, " \
            f"{torch.get_num_threads()} threads"
        section.rows.append([name, f"{r['train']:.2f}", epoch, f"{BATCH / r['infer']:.2f}",
                             f"{r['infer'] / BATCH:.3f}", memory])
    section.rows.append(["paper: RTX 3090 (journal's cost table)", "—",
                         f"{PAPER_S_PER_EPOCH} (shots and 'epoch' unstated)",
                         f"{1 / PAPER_S_PER_IMAGE:.1f}", f"{PAPER_S_PER_IMAGE:.2f}", "—"])
    section.notes.append(
        "Random weights (`backbone.pretrained=false`): speed does not depend on them. An epoch "
        "is 10·k iterations (80 rotated copies per shot, batch 8); the full 80-epoch schedule "
        "is 80× that. CPU rows time one iteration after one warm-up; GPU rows the best of 5. "
        "Inference includes the pyramid split, both bands, both discriminators, upsampling "
        "and σ=4 smoothing.")
    return section


if __name__ == "__main__":
    print(run().markdown())
