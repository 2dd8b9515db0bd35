"""Benchmark: CAMs for 100 images at 512x256 on 2 CPU cores (target: at most 60 s).

    python benchmarks/bench_explain.py [--model efficientnet_b0] [--method gradcam] [--images 100]
        [--size 512x256] [--threads 2] [--batch-size 10]

Random weights (speed does not depend on them); the time covers the CAM method's forward and
backward passes and the upsampling to the input size, i.e. what `mammo-insight explain` spends per
image before mapping and drawing. A warm-up batch is run first and not counted.
"""

from __future__ import annotations

import argparse
import time

import torch

from mammo_insight.explain.cam import METHODS, CamExplainer
from mammo_insight.nets.factory import build_classifier


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--method", default="gradcam", choices=sorted(METHODS))
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", default="512x256")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    model = build_classifier(args.model)
    images = torch.rand(args.images, 1, h, w)
    with CamExplainer(model, args.method, (h, w)) as cam:
        cam(images[: args.batch_size])
        start = time.perf_counter()
        for i in range(0, args.images, args.batch_size):
            cam(images[i : i + args.batch_size])
        seconds = time.perf_counter() - start
    verdict = "PASS" if seconds <= 60 * args.images / 100 else "SLOW"
    print(
        f"{args.method} {args.model} {args.images} images {h}x{w}, {args.threads} threads, "
        f"batch {args.batch_size}: {seconds:.1f} s ({args.images / seconds:.2f} images/s) "
        f"target layer {cam.target.name}: {verdict} (target <= 60 s per 100 images)"
    )


if __name__ == "__main__":
    main()
