"""Every bit depth and mode decodes to the same 8-bit pixels through every path (`images`)."""

import io
import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from common.errors import DataError
from inference import emotion_inference, export, video_scoring
from input_pipeline import deepfake_clips, deepfake_data, fer2013, images

HEIGHT, WIDTH = 6, 8
_RNG = np.random.default_rng(7)
# Smooth content, so lossy JPEG keeps it recognisable for the orientation checks.
_BASE = cv2.resize(
  _RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR
)
_GREY = _BASE[..., 1]
_WIDE = _RNG.integers(0, 65536, (HEIGHT, WIDTH, 4), dtype=np.uint16)  # 16-bit samples


def _pil(image: Image.Image, fmt: str, **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **options)
  return buffer.getvalue()


def _cv2_png(pixels: np.ndarray) -> bytes:
  """A PNG of `pixels` (RGB(A) order, any depth) through OpenCV, which writes 16-bit."""
  if pixels.ndim == 3 and pixels.shape[-1] >= 3:
    pixels = pixels[..., [2, 1, 0, 3][: pixels.shape[-1]]]
  ok, data = cv2.imencode(".png", pixels)
  assert ok
  return data.tobytes()


def _palette() -> tuple[bytes, np.ndarray]:
  palette = _RNG.integers(0, 256, (16, 3), dtype=np.uint8)
  indices = _RNG.integers(0, 16, (HEIGHT, WIDTH), dtype=np.uint8)
  image = Image.fromarray(indices, "P")
  image.putpalette(palette.flatten().tolist())
  return _pil(image, "PNG"), palette[indices]


def _transparent_gif() -> tuple[bytes, bool, np.ndarray]:
  palette = np.array([[10, 20, 30], [200, 100, 50], [40, 220, 90]], np.uint8)
  indices = np.indices((HEIGHT, WIDTH)).sum(0) % 3
  image = Image.fromarray(indices.astype(np.uint8), "P")
  image.putpalette(palette.flatten().tolist())
  expected = np.where((indices == 0)[..., None], 0, palette[indices]).astype(np.uint8)
  return _pil(image, "GIF", transparency=0), False, expected


def _exif_jpeg(orientation: int, byte_order: str = "II") -> bytes:
  """A JPEG of `_BASE` whose EXIF says `orientation` (hand-built APP1 in either byte order)."""
  big = byte_order == "MM"
  order = ">" if big else "<"
  tiff = byte_order.encode() + np.array([42], f"{order}u2").tobytes()
  tiff += np.array([8], f"{order}u4").tobytes() + np.array([1], f"{order}u2").tobytes()
  tiff += np.array([0x0112, 3], f"{order}u2").tobytes() + np.array([1], f"{order}u4").tobytes()
  tiff += np.array([orientation, 0], f"{order}u2").tobytes() + b"\0\0\0\0"
  return _pil(Image.fromarray(_BASE), "JPEG", quality=95, exif=b"Exif\x00\x00" + tiff)


_PALETTE_BYTES, _PALETTE_RGB = _palette()
_ONE_BIT = _GREY > 128
_TO8 = images.to_uint8

# name -> (encoded bytes, grey source, expected RGB pixels or None where lossy).
CASES = {
  "grey 8-bit PNG": (_pil(Image.fromarray(_GREY), "PNG"), True, np.stack([_GREY] * 3, -1)),
  "grey 16-bit PNG": (_cv2_png(_WIDE[..., 0]), True, np.stack([_TO8(_WIDE[..., 0])] * 3, -1)),
  "RGB 8-bit PNG": (_pil(Image.fromarray(_BASE), "PNG"), False, _BASE),
  "RGB 16-bit PNG": (_cv2_png(_WIDE[..., :3]), False, _TO8(_WIDE[..., :3])),
  "LA 8-bit PNG (alpha dropped)": (
    _pil(Image.fromarray(np.stack([_GREY, _BASE[..., 0]], -1), "LA"), "PNG"),
    True,
    np.stack([_GREY] * 3, -1),
  ),
  "LA 16-bit PNG (alpha dropped)": (
    tf.io.encode_png(_WIDE[..., :2]).numpy(),
    True,
    np.stack([_TO8(_WIDE[..., 0])] * 3, -1),
  ),
  "RGBA 8-bit PNG (alpha dropped)": (
    _pil(Image.fromarray(np.dstack([_BASE, _GREY]), "RGBA"), "PNG"),
    False,
    _BASE,
  ),
  "RGBA 16-bit PNG (alpha dropped)": (_cv2_png(_WIDE), False, _TO8(_WIDE[..., :3])),
  "palette PNG": (_PALETTE_BYTES, False, _PALETTE_RGB),
  "1-bit PNG": (
    _pil(Image.fromarray(_ONE_BIT), "PNG"),
    True,
    np.stack([np.where(_ONE_BIT, 255, 0).astype(np.uint8)] * 3, -1),
  ),
  "grey JPEG": (_pil(Image.fromarray(_GREY), "JPEG", quality=95), True, None),
  "RGB JPEG": (_pil(Image.fromarray(_BASE), "JPEG", quality=95), False, None),
  "CMYK JPEG": (_pil(Image.fromarray(_BASE).convert("CMYK"), "JPEG", quality=95), False, None),
  **{
    f"JPEG EXIF orientation {k} ({order})": (_exif_jpeg(k, order), False, None)
    for k in range(1, 9)
    for order in ("II", "MM")
  },
  "GIF": (_pil(Image.fromarray(_PALETTE_RGB).quantize(16), "GIF"), False, None),
  "GIF with a transparent index (black)": (*_transparent_gif(),),
  "BMP": (_pil(Image.fromarray(_BASE), "BMP"), False, _BASE),
  "WebP lossless": (_pil(Image.fromarray(_BASE), "WEBP", lossless=True), False, _BASE),
}


def _in_tf_data(data: bytes, channels: int) -> np.ndarray:
  dataset = tf.data.Dataset.from_tensors(data).map(lambda d: images.decode_tf(d, channels))
  return next(iter(dataset)).numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_mode_decodes_to_the_same_pixels_in_python_and_in_the_graph(name, tmp_path):
  data, grey, expected = CASES[name]
  rgb = images.decode(data, channels=3)
  assert rgb.dtype == np.uint8 and rgb.shape[-1] == 3
  if expected is not None:
    np.testing.assert_array_equal(rgb, expected)
  native = images.decode(data)
  assert native.shape[-1] == (1 if grey else 3)
  np.testing.assert_array_equal(np.broadcast_to(native, rgb.shape), rgb)
  np.testing.assert_array_equal(images.decode(data, channels=1), images.luma(rgb))
  # The graph decode: eagerly, in tf.data, and for one channel.
  np.testing.assert_array_equal(images.decode_tf(tf.constant(data)).numpy(), rgb)
  np.testing.assert_array_equal(_in_tf_data(data, 3), rgb)
  np.testing.assert_array_equal(_in_tf_data(data, 1), images.luma(rgb))
  # The file readers: emotion folders (training, shard writing, evaluation),
  # prediction, video scoring.
  path = str(tmp_path / "image")
  with open(path, "wb") as file:
    file.write(data)
  folder_pixels, reason = fer2013._decode(path)
  assert reason == ""
  np.testing.assert_array_equal(folder_pixels, native)
  np.testing.assert_array_equal(emotion_inference.read_image(path), rgb)
  np.testing.assert_array_equal(video_scoring.read_face_image(path), rgb)
  assert images.header(path) == (rgb.shape[:2], grey)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_applies_it(orientation):
  upright = images.decode(CASES["JPEG EXIF orientation 1 (II)"][0], channels=3)
  turns = {
    1: upright,
    2: upright[:, ::-1],
    3: upright[::-1, ::-1],
    4: upright[::-1],
    5: upright.transpose(1, 0, 2),
    6: np.rot90(upright, k=-1),
    7: upright[::-1, ::-1].transpose(1, 0, 2),
    8: np.rot90(upright, k=1),
  }
  for order in ("II", "MM"):
    data = CASES[f"JPEG EXIF orientation {orientation} ({order})"][0]
    np.testing.assert_array_equal(images.decode(data, 3), turns[orientation])
    np.testing.assert_array_equal(images.decode_tf(tf.constant(data)).numpy(), turns[orientation])


def test_tensorflow_own_decode_truncates_16_bit_which_ours_rounds():
  """Why `decode_tf` exists: TF's decode_image takes the high byte of 16-bit samples."""
  data = CASES["grey 16-bit PNG"][0]
  theirs = tf.io.decode_image(data, channels=1).numpy()[..., 0]
  np.testing.assert_array_equal(theirs, _WIDE[..., 0] >> 8)
  ours = images.decode_tf(tf.constant(data), channels=1).numpy()[..., 0]
  np.testing.assert_array_equal(ours, _TO8(_WIDE[..., 0]))
  assert (ours != theirs).any() and np.abs(ours.astype(int) - theirs).max() == 1


def test_formats_the_graph_cannot_decode_are_refused_by_name():
  tiff = _pil(Image.fromarray(_BASE), "TIFF")
  np.testing.assert_array_equal(images.decode(tiff, 3), _BASE)  # Python reads it
  # Bytes that are not UTF-8 still give a readable message (they are printed as numbers).
  for data in (tiff, b"", b"not an image at all", b"\xff\xd8 \x80\xfe not a JPEG"):
    with pytest.raises(tf.errors.InvalidArgumentError, match="frame: not a JPEG, PNG, GIF, BMP"):
      images.decode_tf(tf.constant(data), name="frame")


def test_unreadable_files_are_data_errors_naming_the_file(tmp_path):
  path = tmp_path / "broken.png"
  path.write_bytes(CASES["RGB 8-bit PNG"][0][:30])
  with pytest.raises(DataError, match="broken.png: cannot decode image"):
    images.read(str(path))
  float_tiff = _pil(Image.fromarray(_GREY.astype(np.float32)), "TIFF")
  with pytest.raises(ValueError, match="floating-point"):
    images.decode(float_tiff)


def test_deepfake_frames_and_the_serving_bytes_signature_decode_alike(tmp_path):
  """The tf.data frame loader (training, shard writing) and `serving_bytes` see `decode`'s."""
  names = sorted(CASES)
  folder = tmp_path / "frames"
  folder.mkdir()
  paths = []
  for index, name in enumerate(names):
    paths.append(str(folder / f"{index:03d}"))
    with open(paths[-1], "wb") as file:
      file.write(CASES[name][0])
  size = 5
  videos = deepfake_data.Videos(
    names=["v"], labels=np.zeros(1, np.int32), groups=np.array(["v"]), frame_paths=[paths]
  )
  frames = deepfake_clips.frame_loader(videos, size)(tf.constant(0), tf.range(len(paths)))
  rgb = [images.decode(CASES[name][0], 3) for name in names]
  for name, frame, pixels in zip(names, frames.numpy(), rgb, strict=True):
    expected = images.resize_to_uint8(pixels, size).numpy()
    np.testing.assert_array_equal(frame, expected, err_msg=name)
  # An emotion export whose "probabilities" are the pixels it was given.
  inputs = keras.Input((size, size, 3))
  model = keras.Model(inputs, keras.layers.Flatten()(keras.layers.Rescaling(1.0)(inputs)))
  class_names = [f"p{i}" for i in range(size * size * 3)]
  saved = export.export_image_classifier(model, str(tmp_path / "export"), class_names, size)
  serve_bytes = tf.saved_model.load(saved).signatures[export.BYTES_SIGNATURE]
  served = serve_bytes(image_bytes=tf.constant([CASES[n][0] for n in names]))["probabilities"]
  for name, row, pixels in zip(names, served.numpy(), rgb, strict=True):
    expected = images.resize_to_uint8(pixels, size, antialias=True).numpy()
    np.testing.assert_array_equal(row.reshape(size, size, 3), expected, err_msg=name)
  assert not os.path.exists(f"{saved}.partial")
