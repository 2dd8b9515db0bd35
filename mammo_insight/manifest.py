"""The small manifest every output directory holds: config, seed, versions, input hashes."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from mammo_insight.files import MANIFEST_FILE, write_text_atomic

TRACKED_PACKAGES = [
    "mammo-insight",
    "numpy",
    "pandas",
    "polars",
    "scikit-learn",
    "statsmodels",
    "lightgbm",
    "shap",
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "grad-cam",
    "pydicom",
    "pylibjpeg",
]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def manifest_path(out: str | Path) -> Path:
    """Where a stage's manifest lives: OUT/manifest.json for a folder, FILE.manifest.json beside a file output.

    Stages that write one file (embed's EMB.parquet, predict's CSV) keep their manifest beside it, named after
    it, so two outputs in one folder never overwrite each other's manifest.
    """
    out = Path(out)
    return out.with_name(f"{out.name}.{MANIFEST_FILE}") if out.suffix else out / MANIFEST_FILE


def write_manifest(
    out: str | Path,
    stage: str,
    config: dict[str, Any],
    seed: int | None = None,
    *,
    inputs: dict[str, str | Path] | None = None,
    headline: dict[str, str] | None = None,
    report: str | None = None,
) -> Path:
    """Write the manifest of a stage output (see `manifest_path`); returns its path.

    inputs maps a name to a file whose sha256 is recorded; headline holds the few formatted numbers the
    report index shows; report names the page (relative to the manifest) that the index links.
    """
    path = manifest_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    hashes = {
        name: {"path": str(p), "sha256": file_sha256(p)}
        for name, p in (inputs or {}).items()
        if Path(p).is_file()
    }
    manifest = {
        "stage": stage,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "seed": seed,
        "config": config,
        "inputs": hashes,
        "headline": dict(headline or {}),
        "report": report,
        "versions": package_versions(),
        "command": " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)),
    }
    return write_text_atomic(path, json.dumps(manifest, indent=2, default=str))
