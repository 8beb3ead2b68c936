"""Request parsing for `POST /v1/generate` and the WebSocket: every mistake is one RequestError
with an HTTP status and a message a person can act on; nothing here raises anything else.

Status codes: 400 malformed (JSON, base64, multipart, an image that does not decode),
413 too large (request bytes or sketch pixels), 415 wrong content type, 422 well-formed but
invalid (missing or unknown field, unknown class, bad seed or n).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

# a u64 would do for torch.Generator, but seeds travel through JavaScript numbers and
# seed + n - 1 must stay representable; 2^53 - 1 is the largest integer JSON parsers agree on
MAX_SEED = 2**53 - 1
FIELDS = ("sketch", "class", "seed", "n")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
_DIGITS = re.compile(r"[0-9]{1,16}")
_DATA_URL = re.compile(r"data:[\w/+.-]*;base64,", re.ASCII)


class RequestError(Exception):
    """A bad request: `status` is the HTTP status (4xx), str(self) the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class GenerateRequest:
    sketch: np.ndarray  # [R, R] uint8, black lines on white, resized as in training
    label: int  # class id
    seeds: tuple[int, ...]  # one image per seed: seed, seed + 1, ..., seed + n - 1


# ---------------------------------------------------------------------- fields
def parse_class(value: Any, class_names: list[str]) -> int:
    """A class name, or an id (int, or a string of digits that is not itself a name)."""
    from s2i_fast.data.classes import resolve_class
    from s2i_fast.errors import UnknownClassError

    if value is None or (isinstance(value, str) and not value.strip()):
        raise RequestError(422, "missing field 'class': a class name or id (GET /v1/classes)")
    if isinstance(value, str) and len(value) > 200:
        raise RequestError(422, f"unknown class {value[:40]!r}... ({len(value)} characters)")
    if isinstance(value, str) and value not in class_names:
        value = value.strip()
    try:
        return resolve_class(value, class_names)
    except UnknownClassError as e:
        raise RequestError(422, str(e)) from None


def parse_int_field(value: Any, name: str, default: int, lo: int, hi: int) -> int:
    """An integer in [lo, hi] from JSON (int) or a form field (digits); None or '' -> default."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    expected = f"'{name}' must be a whole number from {lo} to {hi}"
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value.strip()):
            raise RequestError(422, f"{expected}, got {value[:40]!r}")
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        shown = repr(value) if isinstance(value, float) else type(value).__name__
        raise RequestError(422, f"{expected}, got {shown}")
    if not lo <= value <= hi:
        shown = str(value) if value.bit_length() < 200 else f"a {len(str(value))}-digit number"
        raise RequestError(422, f"{expected}, got {shown}")
    return value


def parse_seeds(seed: Any, n: Any, max_variations: int) -> tuple[int, ...]:
    count = parse_int_field(n, "n", 1, 1, max_variations)
    first = parse_int_field(seed, "seed", 0, 0, MAX_SEED - (count - 1))
    return tuple(range(first, first + count))


# ---------------------------------------------------------------------- images
def decode_sketch(data: bytes, resolution: int, max_pixels: int) -> np.ndarray:
    """PNG/JPEG/WebP bytes -> uint8 [R, R] with the training preprocessing.

    The project's one image reader (s2i_fast.data.preprocess.load_image) decodes it: the
    header is read first, so an oversized image is refused before it is decoded.
    """
    from s2i_fast.data.preprocess import load_image, sketch_to_uint8
    from s2i_fast.errors import DataError, ImageTooLarge

    if not data:
        raise RequestError(422, "the sketch is empty (0 bytes)")
    try:
        im = load_image(data, "L", max_pixels=max_pixels, formats=IMAGE_FORMATS,
                        name="the sketch")
    except ImageTooLarge as e:
        raise RequestError(413, str(e)) from None
    except DataError as e:
        raise RequestError(400, str(e)) from None
    return sketch_to_uint8(im, resolution)


def decode_base64(text: Any) -> bytes:
    """A base64 string, optionally a data: URL, -> bytes."""
    if not isinstance(text, str):
        raise RequestError(422, "'sketch' must be a base64 string (PNG, JPEG or WebP bytes), "
                                f"got {type(text).__name__}")
    head = _DATA_URL.match(text)
    payload = text[head.end():] if head else text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, f"'sketch' is not valid base64 ({e})") from None


# ---------------------------------------------------------------------- bodies
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > 64:  # also keeps int() off Python's 4300-digit limit
        raise ValueError(f"a number with {len(digits.lstrip('-'))} digits is too large")
    return int(digits)


def parse_json(body: bytes | str) -> dict[str, Any]:
    """A JSON object with only the known fields."""
    try:
        obj = json.loads(body, parse_constant=_reject_constant, parse_int=_bounded_int)
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, bad UTF-8, NaN, a number too long
        raise RequestError(400, f"malformed JSON: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise RequestError(400, "the JSON body must be an object: "
                                '{"sketch": "<base64 PNG>", "class": "...", "seed": 0, "n": 1}')
    return obj


def check_fields(names: Any, allowed: tuple[str, ...] = FIELDS) -> None:
    unknown = [str(k)[:40] for k in names if k not in allowed]
    if unknown:
        raise RequestError(422, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                f"expected {', '.join(allowed)}")


def build_request(
    fields: dict[str, Any],
    sketch_bytes: bytes | None,
    class_names: list[str],
    resolution: int,
    max_pixels: int,
    max_variations: int,
) -> GenerateRequest:
    """Validated fields (class, seed, n) + sketch bytes -> GenerateRequest.

    The cheap fields are checked first so that a bad class does not cost a decode.
    """
    label = parse_class(fields.get("class"), class_names)
    seeds = parse_seeds(fields.get("seed"), fields.get("n"), max_variations)
    if sketch_bytes is None:
        raise RequestError(422, "missing field 'sketch': a PNG, JPEG or WebP image")
    sketch = decode_sketch(sketch_bytes, resolution, max_pixels)
    return GenerateRequest(sketch, label, seeds)


def from_json_object(obj: dict[str, Any], class_names: list[str], resolution: int,
                     max_pixels: int, max_variations: int,
                     extra: tuple[str, ...] = ()) -> GenerateRequest:
    """The JSON form: {"sketch": base64, "class": name|id, "seed": int, "n": int}."""
    check_fields(obj, FIELDS + extra)
    sketch = obj.get("sketch")
    data = None if sketch is None else decode_base64(sketch)
    return build_request(obj, data, class_names, resolution, max_pixels, max_variations)
