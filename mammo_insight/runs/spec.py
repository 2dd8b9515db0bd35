"""`RunSpec`: a trained run's settings as one frozen, versioned type, written to RUN/config.json and read back.

Every kind of run (``cnn``: `train`; ``patch``: `patch-train`; ``ensemble``: `ensemble`) records what a
reader needs to use it without knowing which command made it: the backbone and its pooling, the network's
input size and normalisation, the film size it reads, the view mode, the folds and seed, the label, the
tuned thresholds, the preprocessing its cache went through and, for trained kinds, the training recipe
(the ``TrainConfig`` or ``PatchConfig`` it was trained with, read by field name only).

config.json stays one flat JSON object, so every older reader of it still works: the recipe's fields, then
the spec's own keys (``schema_version``, ``kind``, ``model``, ``input_size``, ``input_mean``, ...), then the
facts a command recorded beside them (cache hash, package versions, counts) kept verbatim under their keys.
Folders written before ``schema_version`` existed are read through :func:`upgrade` (one function, the
whole migration); a folder from a newer version of the package is refused with one line.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammo_insight.errors import MammoInsightError
from mammo_insight.files import write_text_atomic
from mammo_insight.imaging.cache import recorded_image_size
from mammo_insight.runs.config import PatchConfig, TrainConfig, config_from_dict

SCHEMA_VERSION = 1
CONFIG_FILE = "config.json"
KINDS = ("cnn", "patch", "ensemble")
RECIPES: dict[str, type] = {"cnn": TrainConfig, "patch": PatchConfig}
MEMBERS_KEY = "ensemble_of"
# config.json keys the spec owns; everything else a command wrote beside them is kept in ``facts``
SPEC_KEYS = (
    "schema_version",
    "kind",
    "model",
    "view_mode",
    "pool",
    "input_size",
    "image_size",
    "input_mean",
    "input_std",
    "max_views",
    "folds",
    "seed",
    "label_column",
    "threshold",
    "thresholds",
    "preprocess",
    "cache",
    MEMBERS_KEY,
)


@dataclass(frozen=True)
class RunSpec:
    """What a run is. ``input_size``: (H, W) the network takes (a patch run's patch); ``image_size``: (H, W)
    of the cache film it reads (a cnn run's input size; a patch run's cache size, over which it slides)."""

    kind: str
    backbone: str
    folds: int
    seed: int
    recipe: Any = field(default=None, compare=True)  # TrainConfig | PatchConfig; None for an ensemble
    view_mode: str = "single"
    pool: str = "avg"
    input_size: tuple[int, int] | None = None
    image_size: tuple[int, int] | None = None
    normalization: tuple[float, float] | None = None  # None: runs made before it was recorded
    max_views: int = 4
    label_column: str = "cancer"
    thresholds: Mapping[str, float] = field(default_factory=dict)  # level -> operating threshold
    preprocess: Mapping[str, Any] | None = None  # the training cache's config.json, verbatim
    cache: str | None = None  # the training cache, as given
    members: tuple[str, ...] = ()  # an ensemble's run folders
    facts: Mapping[str, Any] = field(default_factory=dict)  # other recorded values, verbatim
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MammoInsightError(f"unknown run kind {self.kind!r}; known: {', '.join(KINDS)}")

    # building
    @classmethod
    def cnn(cls, recipe: Any, *, image_size: tuple[int, int], **recorded: Any) -> RunSpec:
        """A whole-image run's spec from its recipe and the image size it resolved (the cache's when unset)."""
        size = (int(image_size[0]), int(image_size[1]))
        return cls(
            kind="cnn",
            backbone=recipe.model,
            folds=recipe.folds,
            seed=recipe.seed,
            recipe=_pinned(recipe, image_size=size),
            view_mode=recipe.view_mode,
            pool=recipe.pool,
            input_size=size,
            image_size=size,
            normalization=_normalization(recipe),
            max_views=recipe.max_views,
            label_column=recipe.label_column,
            **recorded,
        )

    @classmethod
    def patch(cls, recipe: Any, *, image_size: tuple[int, int] | None, **recorded: Any) -> RunSpec:
        """A patch run's spec: its network takes ``patch_size`` squares and slides over ``image_size`` films."""
        size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        return cls(
            kind="patch",
            backbone=recipe.model,
            folds=recipe.folds,
            seed=recipe.seed,
            recipe=recipe,
            pool=getattr(recipe, "pool", "avg"),
            input_size=(recipe.patch_size, recipe.patch_size),
            image_size=size,
            normalization=_normalization(recipe),
            max_views=1,
            label_column=recipe.label_column,
            **recorded,
        )

    def with_thresholds(self, thresholds: Mapping[str, float]) -> RunSpec:
        return dataclasses.replace(self, thresholds=dict(thresholds))

    @property
    def multi_view(self) -> bool:
        return self.view_mode == "multi"

    def build_model(self, *, initial: bool = False) -> Any:
        """The run's network with fresh weights: the one way a model is rebuilt from a run.

        ``initial``: start from the recipe's pretrained weights (``pretrained`` or ``weights``), as training
        does; otherwise random weights, for a fold's state dict to be loaded into or for a random twin.
        """
        if self.recipe is None:
            raise MammoInsightError(f"a {self.kind} run has no network of its own: it uses its members'")
        from mammo_insight.nets.factory import build_classifier  # here: reading a spec needs no torch

        return build_classifier(
            self.backbone,
            self.view_mode,
            weights=self.recipe.weights if initial else None,
            pretrained=bool(self.recipe.pretrained) if initial else False,
            dropout=getattr(self.recipe, "dropout", 0.0),
            img_size=self.input_size,
            normalization=self.normalization,
            pool=self.pool,
        )

    # config.json
    def to_dict(self) -> dict[str, Any]:
        """config.json's object: spec keys first, the recipe's fields, the recorded facts."""
        own = {
            "schema_version": self.schema_version,
            "kind": self.kind,
            "model": self.backbone,
            "view_mode": self.view_mode,
            "pool": self.pool,
            "input_size": _listed(self.input_size),
            "image_size": _listed(self.image_size),
            "input_mean": self.normalization[0] if self.normalization else None,
            "input_std": self.normalization[1] if self.normalization else None,
            "max_views": self.max_views,
            "folds": self.folds,
            "seed": self.seed,
            "label_column": self.label_column,
            "threshold": self.thresholds.get("image"),
            "thresholds": dict(self.thresholds),
            "preprocess": None if self.preprocess is None else dict(self.preprocess),
            "cache": self.cache,
        }
        if self.kind == "ensemble":
            own[MEMBERS_KEY] = list(self.members)
        recipe = self.recipe.to_dict() if self.recipe is not None else {}
        values = {**own, **{k: v for k, v in recipe.items() if k not in own}}
        return {**values, **{k: v for k, v in self.facts.items() if k not in values}}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = CONFIG_FILE) -> RunSpec:
        """The spec of a config.json object (older layouts are upgraded first, see :func:`upgrade`)."""
        values = upgrade(values, source)
        kind = values["kind"]
        recipe = None
        if kind in RECIPES:
            recorded = dict(values)
            if kind == "patch":  # the film it slides over and its one view are the spec's, not the recipe's
                recorded.pop("image_size", None)
                recorded.pop("max_views", None)
            recipe = _recipe(RECIPES[kind], recorded, source)
        mean, std = values.get("input_mean"), values.get("input_std")
        return cls(
            kind=kind,
            backbone=str(values["model"]),
            folds=int(values.get("folds") or 0),
            seed=int(values.get("seed") or 0),
            recipe=recipe,
            view_mode=str(values.get("view_mode") or "single"),
            pool=str(values.get("pool") or "avg"),
            input_size=_sized(values.get("input_size")),
            image_size=_sized(values.get("image_size")),
            normalization=(float(mean), float(std)) if mean is not None and std is not None else None,
            max_views=int(values.get("max_views") or 4),
            label_column=str(values.get("label_column") or "cancer"),
            thresholds=_thresholds(values),
            preprocess=values.get("preprocess") or None,
            cache=values.get("cache"),
            members=tuple(str(m) for m in values.get(MEMBERS_KEY) or ()),
            facts={k: v for k, v in values.items() if k not in SPEC_KEYS and k not in _fields(recipe)},
        )

    def write(self, run_dir: str | Path) -> Path:
        """RUN/config.json, atomically."""
        return write_text_atomic(
            Path(run_dir) / CONFIG_FILE, json.dumps(self.to_dict(), indent=2, default=str)
        )

    @classmethod
    def read(cls, run_dir: str | Path) -> RunSpec:
        """RUN/config.json as a spec; a one-line error when it is missing or not JSON."""
        path = Path(run_dir) / CONFIG_FILE
        if not path.is_file():
            raise MammoInsightError(f"{run_dir} is not a training run: {CONFIG_FILE} is missing")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise MammoInsightError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(values, dict):
            raise MammoInsightError(f"{path} holds no JSON object")
        return cls.from_dict(values, str(path))


def upgrade(values: Mapping[str, Any], source: str = CONFIG_FILE) -> dict[str, Any]:
    """A config.json object in the current layout: the whole migration from older folders, in memory.

    Schema 0 (no ``schema_version``: folders written by `train`, `patch-train` and `ensemble` before the
    spec) gains its ``kind`` (``ensemble_of`` -> ensemble; ``stage`` patch-train or a top-level
    ``patch_size`` -> patch; else cnn), a cnn run's ``input_size`` (its image size), and a patch run's
    ``input_size`` (its patch), ``image_size`` (``cache_size``, else the size its cache records when the
    cache is still there) and ``input_mean``/``input_std`` (the backbone's, when ``normalize``: what its
    models were built with). Missing options keep the recipe defaults, which are what those runs used.
    """
    values = dict(values)
    version = values.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise MammoInsightError(
            f"{source} has schema_version {version!r}, newer than this mammo-insight reads "
            f"({SCHEMA_VERSION}): upgrade mammo-insight to open it"
        )
    if version == SCHEMA_VERSION:
        return values
    if MEMBERS_KEY in values:
        values["kind"] = "ensemble"
    elif values.get("stage") == "patch-train" or "patch_size" in values:
        values["kind"] = "patch"
        values.update(_patch_input(values))
    elif "model" in values:
        values["kind"] = "cnn"
        values.setdefault("input_size", values.get("image_size"))
    else:
        raise MammoInsightError(f"{source} names no 'model': is it a folder written by train or patch-train?")
    values["schema_version"] = SCHEMA_VERSION
    return values


def _patch_input(values: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-0 patch run's network input and film size, as its models were built and slid."""
    size = int(values.get("patch_size") or PatchConfig().patch_size)
    film = values.get("cache_size")
    if film is None and values.get("cache"):
        film = recorded_image_size(values["cache"])
    out: dict[str, Any] = {"input_size": [size, size], "image_size": film, "max_views": 1}
    if values.get("normalize", True) and "input_mean" not in values:
        from mammo_insight.nets.factory import input_normalization

        out["input_mean"], out["input_std"] = input_normalization(str(values["model"]))
    return out


def _recipe(cls: type, values: Mapping[str, Any], source: str) -> Any:
    """The recipe recorded in config.json: its fields by name (lists back to tuples, tables to their
    dataclass); options it predates keep their defaults."""
    if cls is TrainConfig:
        return config_from_dict(dict(values))  # with the training options' type checks
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, hint = values[f.name], hints[f.name]
        if isinstance(value, dict) and dataclasses.is_dataclass(hint):
            value = _recipe(hint, value, source)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise MammoInsightError(f"{source}: the recorded {cls.__name__} does not read back ({exc})") from None


def _normalization(recipe: Any) -> tuple[float, float] | None:
    """(mean, std) a recipe's models normalise their input with: the backbone's, when ``normalize``."""
    if not recipe.normalize:
        return None
    from mammo_insight.nets.factory import input_normalization

    return input_normalization(recipe.model)


def _pinned(recipe: Any, **values: Any) -> Any:
    """The recipe with resolved values written in (so config.json reads back into the same spec)."""
    names = _fields(recipe)
    return dataclasses.replace(recipe, **{k: v for k, v in values.items() if k in names})


def _fields(recipe: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(recipe)} if recipe is not None else set()


def _listed(size: tuple[int, int] | None) -> list[int] | None:
    return None if size is None else [int(size[0]), int(size[1])]


def _sized(value: Any) -> tuple[int, int] | None:
    return None if not value else (int(value[0]), int(value[1]))


def _thresholds(values: Mapping[str, Any]) -> dict[str, float]:
    found = dict(values.get("thresholds") or {})
    if not found and values.get("threshold") is not None:
        found["image"] = values["threshold"]
    return {str(k): float(v) for k, v in found.items() if v is not None}
