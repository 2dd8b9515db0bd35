"""What the no-identifying-value tests share: the texts a written file shows (its bytes, a PNG's text
chunks, a parquet's cells and attributes) and whether a text holds an identifying value."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd


def output_texts(path: Path) -> list[bytes]:
    """Every way the file's content can be read as text."""
    data = path.read_bytes()
    texts = [data, data.decode("utf-8", "ignore").encode()]
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as im:
            texts.append(json.dumps({str(k): str(v) for k, v in im.info.items()}).encode())
    if path.suffix == ".parquet":
        frame = pd.read_parquet(io.BytesIO(data))
        texts.append(frame.astype(str).to_csv().encode() + json.dumps(frame.attrs, default=str).encode())
    return texts


def holds(text: bytes | str, secret: str) -> bool:
    """``secret`` in ``text``; a numeric one (a birth date, a number id) only as a whole number: a written
    probability such as 0.44110846519470215 holds any eight digits in a row."""
    data = text.encode() if isinstance(text, str) else text
    if secret.isdigit():
        return re.search(rb"(?<![0-9])" + re.escape(secret.encode()) + rb"(?![0-9])", data) is not None
    return secret.encode() in data
