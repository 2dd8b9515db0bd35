"""Benchmark: CPU cost of a training step, EfficientNet-Lite0 vs Lite1 vs Lite2, side by side.

    nice -n 19 python benchmarks/bench_backbones.py                    # lite0, lite1, lite2; 1 thread
    python benchmarks/bench_backbones.py --models tf_efficientnet_lite0,resnet18 --threads 2 --rounds 9

Each model is the 1-channel classifier a run builds (nets.factory.build_classifier, random weights: the
cost does not depend on them) in train mode, and one step is forward, BCE and backward, timed
on the shapes the mini-MIAS routes train on: 32x32 lesion patches in batches of 64 (patch-train) and
256x128 films in batches of 16 (train), the whole network trainable, and the films again with only the
last 3 coarse groups trainable (examples/mias_pretrained.toml's CPU recipe: less to backpropagate).
A step's time is the CPU time this process spends on it (``time.process_time``; one torch thread by
default, so it is the step's compute), not wall time, which on cores shared with another job mostly
measures the other job. The models take turns step by step within each round, so what the sharing still
costs (caches, memory bandwidth) hits all of them alike; each model's fastest step is reported with its
ratio to the first model's, beside the ratio of the forward pass's floating-point
operations (torch's FlopCounterMode: a count no load changes; forward only, since torch 2.14 counts a
depthwise convolution's backward as if it were dense; depthwise convolutions are bound by memory more
than by arithmetic, so time need not follow the count). Ratios are the figure; absolute
times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time

SHAPES = {  # name: (batch, height, width, trainable_groups)
    "patches 32x32, batch 64": (64, 32, 32, 0),
    "films 256x128, batch 16": (16, 256, 128, 0),
    "films 256x128, batch 16, last 3 groups": (16, 256, 128, 3),
}


def make_model(name: str, trainable_groups: int):
    """The run's classifier for ``name`` with only the last ``trainable_groups`` backbone groups trainable."""
    from types import SimpleNamespace

    from mammo_insight.nets.factory import build_classifier, input_normalization
    from mammo_insight.nets.unfreeze import apply_schedule, backbone_groups

    model = build_classifier(name, normalization=input_normalization(name)).train()
    schedule = SimpleNamespace(trainable_groups=trainable_groups, freeze_epochs=0, unfreeze_stages=1)
    apply_schedule(backbone_groups(model.backbone), 0, schedule)
    return model


def step_seconds(model, x, y) -> float:
    """CPU seconds of one forward + loss + backward."""
    import torch

    model.zero_grad(set_to_none=True)
    started = time.process_time()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1), y)
    loss.backward()
    return time.process_time() - started


def forward_flops(model, x) -> int:
    """Floating-point operations of one forward pass."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def bench_shape(
    models: list[str], shape: tuple[int, int, int, int], rounds: int
) -> dict[str, tuple[float, int]]:
    """Each model's fastest step (seconds) and forward FLOPs on one input shape, models interleaved."""
    import torch

    batch, height, width, groups = shape
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, height, width, generator=generator)
    y = (torch.arange(batch) % 4 == 0).float()
    nets = {name: make_model(name, groups) for name in models}
    flops = {name: forward_flops(net, x) for name, net in nets.items()}
    for net in nets.values():
        step_seconds(net, x, y)  # warm-up: allocator and kernel selection
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, net in nets.items():
            times[name].append(step_seconds(net, x, y))
    return {name: (min(t), flops[name]) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", default="tf_efficientnet_lite0,tf_efficientnet_lite1,tf_efficientnet_lite2"
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed steps per model and shape")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: polite on shared cores)")
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    params = {name: sum(p.numel() for p in make_model(name, 0).parameters()) / 1e6 for name in models}
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU time, fastest of {args.rounds} steps")
    print("params (M): " + ", ".join(f"{n} {p:.2f}" for n, p in params.items()))
    for label, shape in SHAPES.items():
        result = bench_shape(models, shape, args.rounds)
        base_s, base_flops = result[models[0]]
        cells = [
            f"{name} {s * 1000:.0f} ms CPU ({s / base_s:.2f}x; forward GFLOP {f / 1e9:.2f}, {f / base_flops:.2f}x)"
            for name, (s, f) in result.items()
        ]
        print(f"{label}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
