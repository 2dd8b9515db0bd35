"""The one device policy of every command that runs a model (train, evaluate, embed, explain, predict).

``resolve_device(name)`` turns the ``--device`` option into a ``torch.device``:

- ``"auto"``: the first CUDA GPU when torch sees one, else the CPU;
- ``"cpu"``: the CPU;
- ``"cuda"`` / ``"cuda:N"``: that GPU; when torch sees no CUDA GPU, or fewer than N + 1, it is a clear
  error naming the device (never a silent fall back to the CPU: a run that was meant for a GPU and takes
  a day on the CPU is worse than a message).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from mammo_insight.errors import MammoInsightError

if TYPE_CHECKING:  # torch is imported when a device is resolved, so option checks stay light
    import torch

DEVICE_HELP = "auto (a CUDA GPU when present, else the CPU), cpu, cuda or cuda:N"
_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def is_device_name(name: str) -> bool:
    """True for the names resolve_device accepts (whether or not the device is present)."""
    return bool(_PATTERN.match(str(name).strip().lower()))


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device NAME`` (see the module docstring for the policy)."""
    import torch

    text = str(name).strip().lower()
    if not _PATTERN.match(text):
        raise MammoInsightError(f"--device must be {DEVICE_HELP}; got {name!r}")
    if text == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if text == "auto":
        return torch.device("cuda", 0) if available else torch.device("cpu")
    index = int(text.split(":")[1]) if ":" in text else 0
    if not available:
        raise MammoInsightError(
            f"--device {name} was asked for but torch sees no CUDA GPU (use --device cpu or auto)"
        )
    count = torch.cuda.device_count()
    if index >= count:
        raise MammoInsightError(
            f"--device {name} was asked for but torch sees {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})"
        )
    return torch.device("cuda", index)


def is_ddp_worker() -> bool:
    """True in a DDP worker process (global rank above 0): Lightning sets LOCAL_RANK and NODE_RANK when it
    starts the processes itself, torchrun and SLURM set RANK. Only global rank 0 claims and writes a run."""
    return any(os.environ.get(name, "0") != "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))
