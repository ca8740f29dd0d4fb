"""The one image decode: encoded files -> uint8 pixels, the same in Python and in a TF graph.

Every place that decodes an image file or image bytes calls this module:
`decode` / `read` (Python, Pillow; folders, shard writing, prediction, video
scoring) or `decode_tf` (a TF graph: deepfake frames in tf.data, TFRecord
shards, the `serving_bytes` signature, which TF Serving runs without Python).
Both give the same pixels for every mode below (tested mode by mode in
`tests/image_decoding_test.py`):

| source | 8-bit pixels |
| --- | --- |
| 8-bit grayscale, 1-bit | as stored (1-bit: 0 or 255); one channel, or three equal ones |
| 16-bit (grayscale, RGB, with alpha) | `round(v * 255 / 65535)`: `(v * 255 + 32767) // 65535` |
| palette (`P`) | the palette's RGB (a transparent index keeps its palette colour) |
| alpha (`LA`, `RGBA`, 8 or 16-bit) | alpha dropped: the stored colour is kept, not composited |
| CMYK JPEG | `(255 - C) * (255 - K) // 255` per channel (libjpeg's and Pillow's rule) |
| JPEG | libjpeg's accurate integer IDCT (`INTEGER_ACCURATE`, Pillow's default) |
| JPEG EXIF orientation 2-8 | applied (turned upright); other formats' orientation is ignored |
| RGB asked as one channel | Pillow's luma `(19595 R + 38470 G + 7471 B + 32768) >> 16` |

TensorFlow's own `decode_image` differs: it truncates 16-bit to the high byte
(`v >> 8`, up to 1 less), uses the fast IDCT for JPEG (up to 4 apart) and
ignores EXIF orientation; hence `decode_tf`. Pillow decodes 16-bit RGB(A) PNGs
by truncation too, so `decode` reads 16-bit PNGs with OpenCV. The graph
decodes JPEG, PNG, GIF, BMP and WebP only (what TensorFlow can); TIFF and the
rest are Python-only. A GIF's first frame is used, and its transparent pixels
are black (TensorFlow's GIF decoder paints them so, and cannot be told
otherwise; `decode` follows it, the one exception to "alpha dropped").
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from common.errors import DataError

# Pillow modes whose pixels are one grey channel (16-bit PNGs are classified by
# their header, since Pillow opens 16-bit grey+alpha as RGBA).
GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The formats `decode_tf` reads, for messages.
GRAPH_FORMATS = "JPEG, PNG, GIF, BMP or WebP"
_EXIF_ORIENTATION_TAG = 0x0112
# Pillow's names for JPEG files (MPO: a phone's multi-picture JPEG, decoded as JPEG by TF).
_JPEG_FORMATS = ("JPEG", "MPO")


def to_uint8(values: np.ndarray) -> np.ndarray:
  """16-bit values -> 8-bit, rounded: `round(v * 255 / 65535)`."""
  wide = np.clip(values.astype(np.int64), 0, 65535)
  return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
  """uint8 RGB `[..., 3]` -> grey `[..., 1]` with Pillow's integer ITU-R 601 weights."""
  wide = rgb.astype(np.int64)
  grey = (19595 * wide[..., 0] + 38470 * wide[..., 1] + 7471 * wide[..., 2] + 32768) >> 16
  return grey.astype(np.uint8)[..., None]


def _png_header(data: bytes) -> tuple[int, int] | None:
  """`(bit depth, colour type)` of a PNG's IHDR, or None when `data` is no PNG."""
  if len(data) < 26 or not data.startswith(_PNG_SIGNATURE):
    return None
  return data[24], data[25]


def _decode_16bit_png(data: bytes, colour_type: int) -> np.ndarray:
  """A 16-bit PNG at full depth (OpenCV), scaled to 8-bit; alpha dropped."""
  pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if pixels is None:
    raise ValueError("OpenCV cannot decode this 16-bit PNG")
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  if colour_type in (0, 4):  # Grey, grey + alpha (OpenCV widens the latter to BGRA).
    return to_uint8(pixels[..., :1])
  return to_uint8(pixels[..., 2::-1])  # BGR(A) -> RGB.


def _decode_pil(image: Image.Image) -> np.ndarray:
  """A loaded Pillow image -> uint8 `[h, w, 1]` (grey modes) or `[h, w, 3]`."""
  if image.format in _JPEG_FORMATS:
    image = ImageOps.exif_transpose(image)  # Phone photos are stored sideways.
  mode = image.mode
  if mode in _SIXTEEN_BIT_MODES:
    return to_uint8(np.asarray(image))[..., None]
  if mode == "F":
    raise ValueError("32-bit floating-point pixels are not supported; save as 8 or 16-bit")
  if mode in GRAYSCALE_MODES:
    return np.asarray(image.convert("L"))[..., None]
  rgb = np.asarray(image.convert("RGB"))
  transparent = image.info.get("transparency")
  if image.format == "GIF" and mode == "P" and isinstance(transparent, int):
    rgb = np.where((np.asarray(image) == transparent)[..., None], 0, rgb).astype(np.uint8)
  return rgb


def decode(data: bytes, channels: int | None = None) -> np.ndarray:
  """Encoded image bytes -> uint8 `[h, w, c]`, by the rules of the module docstring.

  Args:
    data: the file's bytes.
    channels: 1 or 3 to force grey or RGB; None keeps the source's own (1 for
      grey sources, else 3), as the emotion folders are stored.

  Raises:
    ValueError: (or Pillow's own errors) the bytes are no decodable image.
  """
  if channels not in (None, 1, 3):
    raise ValueError(f"channels={channels}; expected None, 1 or 3.")
  png = _png_header(data)
  if png is not None and png[0] == 16:
    pixels = _decode_16bit_png(data, png[1])
  else:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # Raises on truncated files, which `open` alone does not.
      pixels = _decode_pil(image)
  if channels == 3 and pixels.shape[-1] == 1:
    pixels = np.repeat(pixels, 3, axis=-1)
  elif channels == 1 and pixels.shape[-1] == 3:
    pixels = luma(pixels)
  return pixels


def read(path: str, channels: int | None = None) -> np.ndarray:
  """`decode` of a file; one that cannot be read or decoded is a DataError naming it."""
  try:
    with open(path, "rb") as file:
      return decode(file.read(), channels)
  except Exception as error:  # Pillow raises many types for bad files.
    raise DataError(f"{path}: cannot decode image ({type(error).__name__}: {error}).") from error


def header(path: str) -> tuple[tuple[int, int], bool]:
  """`((height, width), grayscale)` of the pixels `read(path)` gives, from the header only.

  Raises:
    Exception: (Pillow's) the file is no image Pillow can open.
  """
  with open(path, "rb") as file:
    png = _png_header(file.read(26))
  with Image.open(path) as image:
    height, width = image.height, image.width
    if image.format in _JPEG_FORMATS and image.getexif().get(_EXIF_ORIENTATION_TAG) in (5, 6, 7, 8):
      height, width = width, height
    grayscale = image.mode in GRAYSCALE_MODES
  if png is not None and png[0] == 16:
    grayscale = png[1] in (0, 4)
  return (height, width), grayscale


# ---------------------------------------------------------------------------
# The graph decode.


def _exif_orientation(encoded: tf.Tensor) -> tf.Tensor:
  """EXIF orientation (int32, 1..8; 1 when absent or unreadable) of a JPEG's bytes.

  Reads IFD0 of the first `Exif\\0\\0` block (the APP1 segment cameras write)
  for tag 0x0112, in either byte order.
  """
  head = tf.strings.substr(encoded, 0, 1 << 16)
  parts = tf.strings.split(tf.reshape(head, [1]), sep="Exif\x00\x00", maxsplit=1).flat_values
  # Most frames carry no EXIF: they skip the parse.
  return tf.cond(tf.size(parts) > 1, lambda: _ifd0_orientation(parts[-1]), lambda: 1)


def _ifd0_orientation(tiff: tf.Tensor) -> tf.Tensor:
  """Tag 0x0112 of IFD0 in a TIFF header's bytes (int32; 1 when absent or invalid)."""
  size = 1 << 14
  raw = tf.cast(tf.io.decode_raw(tf.strings.substr(tiff, 0, size), tf.uint8), tf.int32)
  available = tf.shape(raw)[0]
  raw = tf.pad(raw, [[0, size + 2 - available]])
  little = tf.equal(raw[0], ord("I"))

  def u16(offset: tf.Tensor) -> tf.Tensor:
    offset = tf.clip_by_value(offset, 0, size)
    first, second = tf.gather(raw, offset), tf.gather(raw, offset + 1)
    return tf.where(little, first + 256 * second, 256 * first + second)

  ifd = tf.where(little, u16(4) + 65536 * u16(6), 65536 * u16(4) + u16(6))
  ifd = tf.where((ifd >= 8) & (ifd < size), ifd, size)
  count = u16(ifd)
  slots = tf.range(256)
  offsets = ifd + 2 + 12 * slots
  match = (
    (slots < count) & (offsets + 12 <= available) & tf.equal(u16(offsets), _EXIF_ORIENTATION_TAG)
  )
  value = tf.reduce_max(tf.where(match, u16(offsets + 8), 0))
  valid = tf.reduce_any(match) & (value >= 1) & (value <= 8)
  return tf.where(valid, value, 1)


def _orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
  """Turns `[h, w, c]` upright for an EXIF orientation, as `ImageOps.exif_transpose`."""
  transpose = lambda x: tf.transpose(x, [1, 0, 2])  # noqa: E731
  branches = [
    lambda: image,  # 1 (and 0: absent)
    lambda: image,
    lambda: image[:, ::-1],  # 2: mirrored
    lambda: image[::-1, ::-1],  # 3: 180 degrees
    lambda: image[::-1],  # 4: flipped
    lambda: transpose(image),  # 5: transposed
    lambda: tf.image.rot90(image, k=3),  # 6: turn 90 degrees clockwise
    lambda: transpose(image[::-1, ::-1]),  # 7: transversed
    lambda: tf.image.rot90(image, k=1),  # 8: turn 90 degrees anticlockwise
  ]
  return tf.switch_case(orientation, branches)


def graph_format(encoded: tf.Tensor) -> tf.Tensor:
  """int32 scalar: 1 JPEG, 2 PNG, 3 GIF/BMP/WebP, 0 a format the graph cannot decode."""
  head = tf.strings.substr(encoded, 0, 12) + b"\0" * 12  # substr past the end is an error.

  def starts(prefix: bytes, offset: int = 0) -> tf.Tensor:
    return tf.equal(tf.strings.substr(head, offset, len(prefix)), prefix)

  is_png = starts(_PNG_SIGNATURE)
  is_other = starts(b"GIF8") | starts(b"BM") | (starts(b"RIFF") & starts(b"WEBP", 8))
  return tf.where(tf.io.is_jpeg(encoded), 1, tf.where(is_png, 2, tf.where(is_other, 3, 0)))


def _luma_tf(rgb: tf.Tensor) -> tf.Tensor:
  wide = tf.cast(rgb, tf.int32)
  weighted = 19595 * wide[..., 0] + 38470 * wide[..., 1] + 7471 * wide[..., 2] + 32768
  return tf.cast(tf.bitwise.right_shift(weighted, 16), tf.uint8)[..., None]


def decode_tf(encoded: tf.Tensor, channels: int = 3, name: str = "image") -> tf.Tensor:
  """Encoded image (string scalar) -> uint8 `[h, w, channels]`: `decode`'s pixels, in a graph.

  Runs eagerly, in tf.data and in a SavedModel. A format the graph cannot
  decode, or bytes that are no image, fail with an InvalidArgumentError whose
  message starts with `name`.
  """
  if channels not in (1, 3):
    raise ValueError(f"channels={channels}; expected 1 or 3.")
  encoded = tf.convert_to_tensor(encoded, tf.string)
  kind = graph_format(encoded)
  # The first bytes as numbers: raw bytes in the message would not be UTF-8.
  first = tf.io.decode_raw(tf.strings.substr(encoded + b"\0" * 8, 0, 8), tf.uint8)
  check = tf.debugging.Assert(
    kind > 0,
    [f"{name}: not a {GRAPH_FORMATS} file; its first bytes (padded with 0) are", first],
    summarize=8,
  )
  with tf.control_dependencies([check]):
    kind = tf.identity(kind)

  def jpeg() -> tf.Tensor:
    image = tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")
    orientation = _exif_orientation(encoded)
    return tf.cond(orientation > 1, lambda: _orient(image, orientation), lambda: image)

  def png() -> tf.Tensor:
    wide = tf.cast(tf.io.decode_png(encoded, channels=3, dtype=tf.uint16), tf.int32)
    return tf.cast((wide * 255 + 32767) // 65535, tf.uint8)

  def other() -> tf.Tensor:
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)

  image = tf.switch_case(tf.maximum(kind - 1, 0), [jpeg, png, other])
  image = tf.ensure_shape(image, [None, None, 3])
  return _luma_tf(image) if channels == 1 else image


def resize_to_uint8(images: tf.Tensor, size: int, antialias: bool = False) -> tf.Tensor:
  """Bilinear resize of uint8 images to `size` x `size`, rounded back to uint8.

  The one resize for pixels brought to a model's input size outside the model,
  so training and serving see the same pixels: deepfake frames in tf.data and
  in the deepfake export (without antialiasing), and encoded files in the
  emotion export (`antialias=True`, as `resampling.resize` inside the emotion
  model, which resizes the other signature's images).
  """
  resized = tf.image.resize(images, (size, size), antialias=antialias)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def decode_files(encoded: tf.Tensor, size: int, name: str, antialias: bool = False) -> tf.Tensor:
  """String `[n]` of encoded image files -> uint8 `[n, size, size, 3]`, in a graph.

  Each file is decoded to RGB by `decode_tf` (an undecodable one fails with a
  message starting with `name`) and resized by `resize_to_uint8`, so the files
  may differ in size: deepfake frame files in tf.data and the encoded files of
  both exports' `serving_bytes` signatures.
  """

  def decode(one: tf.Tensor) -> tf.Tensor:
    return resize_to_uint8(decode_tf(one, channels=3, name=name), size, antialias)

  return tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec((size, size, 3), tf.uint8))
