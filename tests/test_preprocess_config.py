"""PreprocessConfig's dict round-trip (what CACHE/config.json holds) and the one --size parser."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.build import _check_config
from mammo_insight.imaging.pipeline import PreprocessConfig
from mammo_insight.sizes import MAX_SIDE, MIN_SIDE, format_size, parse_size

sides = st.integers(MIN_SIDE, MAX_SIDE)
configs = st.builds(
    PreprocessConfig,
    size=st.tuples(sides, sides),
    bits=st.sampled_from([8, 16]),
    flip=st.booleans(),
    decoder=st.sampled_from(["pydicom", "gdcm", "dicomsdl"]),
    margin=st.floats(0, 0.5, allow_nan=False),
    mask=st.booleans(),
)


@given(configs)
def test_to_dict_from_dict_round_trips_through_json(config) -> None:
    stored = json.loads(json.dumps(config.to_dict()))
    assert stored["decoder"] == config.decoder and isinstance(stored["flip"], bool)
    assert PreprocessConfig.from_dict(stored) == config
    assert (
        PreprocessConfig.from_dict({**stored, "dataset": "rsna", "crop": {}}) == config
    )  # cache keys ignored


@given(configs)
def test_old_caches_flip_left_none_and_backend_are_read(config) -> None:
    old = {
        "size": list(config.size),
        "bits": config.bits,
        "flip": "left" if config.flip else "none",
        "backend": config.decoder,
        "margin": config.margin,
        "mask": config.mask,
    }
    assert PreprocessConfig.from_dict(old) == config


@pytest.mark.parametrize(
    "bad", [{}, {"size": 5}, {"size": ["a", 3]}, {"size": [64, 32], "flip": "right"}, None]
)
def test_from_dict_rejects_what_is_not_a_config(bad) -> None:
    with pytest.raises(MammoInsightError):
        PreprocessConfig.from_dict(bad)


def test_an_old_cache_config_resumes_with_the_same_settings(tmp_path) -> None:
    old = {
        "size": [64, 32],
        "bits": 8,
        "flip": "left",
        "backend": "pydicom",
        "margin": 0.01,
        "mask": True,
        "dataset": "rsna",
    }
    (tmp_path / "config.json").write_text(json.dumps(old))
    new = {**PreprocessConfig(size=(64, 32), decoder="pydicom").to_dict(), "dataset": "rsna"}
    _check_config(tmp_path, new)  # same pixels: no error, config.json rewritten in today's form
    assert json.loads((tmp_path / "config.json").read_text())["decoder"] == "pydicom"
    with pytest.raises(MammoInsightError, match="flip"):
        _check_config(tmp_path, {**new, "flip": False})


@given(sides, sides, st.sampled_from(["x", "X", " x ", "x "]))
def test_valid_sizes_parse_to_height_width(height, width, sep) -> None:
    assert parse_size(f"{height}{sep}{width}") == (height, width)
    assert parse_size(format_size((height, width))) == (height, width)


@settings(max_examples=300)
@given(st.text())
def test_any_text_parses_or_raises_mammo_insight_error(text) -> None:
    try:
        height, width = parse_size(text)
    except MammoInsightError:
        return
    assert MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE


@pytest.mark.parametrize(
    "text",
    [
        "512",
        "512x",
        "x256",
        "15x256",
        "512x256x3",
        "-512x256",
        "1e3x256",
        "99999999x16",
        "9" * 5000 + "x16",
        "512*256",
        "",
    ],
)
def test_invalid_sizes_are_clear_errors(text) -> None:
    with pytest.raises(MammoInsightError, match="size"):
        parse_size(text)


@given(st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.integers())))
def test_non_text_sizes_are_clear_errors(value) -> None:
    with pytest.raises(MammoInsightError):
        parse_size(value)
