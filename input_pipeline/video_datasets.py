"""Data-set adapters: video files, labels, leakage groups and known splits.

Each adapter reads a data set in the layout its authors publish and returns a
`Catalogue`: one `VideoRecord` per video plus the problems met (a video
listed but absent, a fake without its original), which are reported and
skipped rather than fatal, since real releases have a few of each.

The `group` of a record keeps related videos on one side of a split: a fake
is grouped with the real video it was made from (its faces and scene are the
same), so a detector cannot score well by recognising a person it saw.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from common import io_utils
from common.errors import DataError
from input_pipeline.deepfake_data import drop_duplicate_rows, label_from_text, parse_label
from input_pipeline.video_io import list_videos

DATASETS = ("dfdc", "ffpp", "celebdf", "csv", "folders")
FFPP_METHODS = (
  "Deepfakes",
  "Face2Face",
  "FaceSwap",
  "NeuralTextures",
  "FaceShifter",
  "DeepFakeDetection",
)
FFPP_QUALITIES = ("raw", "c23", "c40")
_FFPP_SPLIT_FILES = {"train": "train.json", "validation": "val.json", "test": "test.json"}


@dataclasses.dataclass(frozen=True)
class VideoRecord:
  """One video of a data set."""

  path: str  # The video file.
  video_id: str  # Unique within the data set; the frames folder of its faces.
  label: int  # 0 real, 1 fake.
  group: str  # Videos of a group stay in one split.
  dataset: str  # dfdc, ffpp, celebdf, csv or folders.
  split: str = ""  # train, validation or test when the data set says so.
  method: str = ""  # Manipulation method, where the data set names one.


@dataclasses.dataclass
class Catalogue:
  records: list[VideoRecord]
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, why)
  warnings: list[str] = dataclasses.field(default_factory=list)  # Kept, but worth a look.


def _stem(filename: str) -> str:
  return os.path.splitext(os.path.basename(filename))[0]


def _read_json(path: str) -> object:
  try:
    with open(path, encoding="utf-8") as file:
      return json.load(file)
  except json.JSONDecodeError as error:
    raise DataError(f"{path}: not valid JSON ({error}).") from error


# --- DFDC -----------------------------------------------------------------------------------


def _dfdc_metadata(metadata_path: str, root: str, catalogue: Catalogue) -> None:
  folder = os.path.dirname(metadata_path)
  part = os.path.relpath(folder, root).replace(os.sep, "/")
  part = "" if part == "." else f"{part}/"
  entries = _read_json(metadata_path)
  if not isinstance(entries, dict):
    raise DataError(f"{metadata_path}: expected an object of video file -> entry.")
  for filename, entry in sorted(entries.items()):
    label = label_from_text(entry.get("label", "")) if isinstance(entry, dict) else None
    if label is None:
      raise DataError(
        f"{metadata_path}: entry {filename!r} has label {entry!r}; expected REAL or FAKE."
      )
    path = os.path.join(folder, filename)
    if not os.path.isfile(path):
      catalogue.skipped.append((path, f"listed in {metadata_path} but absent"))
      continue
    original = entry.get("original") or ""
    if label == 1 and not original:
      catalogue.warnings.append(
        f"{path}: FAKE with no 'original' in {metadata_path}; grouped on its own."
      )
    catalogue.records.append(
      VideoRecord(
        path=path,
        video_id=f"dfdc/{part}{_stem(filename)}",
        label=label,
        group=f"dfdc:{_stem(original) if label == 1 and original else _stem(filename)}",
        dataset="dfdc",
      )
    )


def _dfdc_labels_csv(csv_path: str, root: str, catalogue: Catalogue) -> None:
  """The test-set form: `filename,label` (1 = fake) with the videos beside the CSV."""
  table = io_utils.read_csv_table(csv_path, "filename,label")
  missing = [c for c in ("filename", "label") if c not in table.columns]
  if missing:
    raise DataError(f"{csv_path}: missing column(s) {missing}; expected filename,label.")
  folder = os.path.dirname(csv_path)
  part = os.path.relpath(folder, root).replace(os.sep, "/")
  part = "" if part == "." else f"{part}/"
  table = drop_duplicate_rows(table, "filename", csv_path)
  for row, record in zip(table.index, table.to_dict("records"), strict=True):
    label = parse_label(record["label"], row, csv_path)
    path = os.path.join(folder, record["filename"])
    if not os.path.isfile(path):
      catalogue.skipped.append((path, f"listed in {csv_path} but absent"))
      continue
    stem = _stem(record["filename"])
    catalogue.records.append(
      VideoRecord(path, f"dfdc/{part}{stem}", label, f"dfdc:{stem}", "dfdc", split="test")
    )


def dfdc(root: str) -> Catalogue:
  """DFDC: `dfdc_train_part_*/metadata.json` parts and `labels.csv` test sets under `root`.

  Training parts carry no split of their own (the trainer makes a grouped
  one); videos of a `labels.csv` test set get split `test`.
  """
  if not os.path.isdir(root):
    raise DataError(f"DFDC root {root!r} does not exist.")
  catalogue = Catalogue([])
  found = False
  for folder, _, files in sorted(os.walk(root)):
    if "metadata.json" in files:
      _dfdc_metadata(os.path.join(folder, "metadata.json"), root, catalogue)
      found = True
    elif "labels.csv" in files:
      _dfdc_labels_csv(os.path.join(folder, "labels.csv"), root, catalogue)
      found = True
  if not found:
    raise DataError(
      f"{root}: no DFDC metadata.json (training parts) or labels.csv (test sets) found."
    )
  return catalogue


# --- FaceForensics++ -------------------------------------------------------------------------


class _Groups:
  """Union-find over ids: a fake `a_b` joins the originals `a` and `b`."""

  def __init__(self):
    self.parent: dict[str, str] = {}

  def find(self, key: str) -> str:
    self.parent.setdefault(key, key)
    while self.parent[key] != key:
      self.parent[key] = self.parent[self.parent[key]]
      key = self.parent[key]
    return key

  def join(self, a: str, b: str) -> None:
    root_a, root_b = sorted((self.find(a), self.find(b)))
    self.parent[root_b] = root_a


def _ffpp_official_splits(splits_dir: str) -> dict[str, str]:
  """Original id -> split from FF++'s train.json / val.json / test.json (lists of id pairs)."""
  split_of = {}
  for split, filename in _FFPP_SPLIT_FILES.items():
    path = os.path.join(splits_dir, filename)
    if not os.path.isfile(path):
      raise DataError(f"FF++ split file {path!r} does not exist; expected {filename} there.")
    pairs = _read_json(path)
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
      raise DataError(f"{path}: expected a list of [id, id] pairs.")
    for pair in pairs:
      for video in pair:
        split_of[str(video)] = split
  return split_of


def faceforensics(
  root: str,
  methods: tuple[str, ...] | None = None,
  qualities: tuple[str, ...] = ("c23",),
  splits_dir: str | None = None,
) -> Catalogue:
  """FaceForensics++ in its download layout.

  `original_sequences/<youtube|actors>/<quality>/videos/*.mp4` are real;
  `manipulated_sequences/<method>/<quality>/videos/*.mp4` are fake. A fake
  `<target>_<source>` shares its group with originals `<target>` and
  `<source>` (the pair the official splits keep together); a
  DeepFakeDetection fake `<a>_<b>__<scene>__<id>` is grouped with actor `<a>`.
  `methods` (default: all found) selects the fakes; the YouTube originals
  come with any YouTube method, the actors' with DeepFakeDetection.
  `splits_dir` holds the official train/val/test.json.
  """
  if not os.path.isdir(os.path.join(root, "original_sequences")) and not os.path.isdir(
    os.path.join(root, "manipulated_sequences")
  ):
    raise DataError(
      f"{root}: not a FaceForensics++ root (no original_sequences/ or manipulated_sequences/)."
    )
  for quality in qualities:
    if quality not in FFPP_QUALITIES:
      raise DataError(f"FF++ quality {quality!r}; expected some of {list(FFPP_QUALITIES)}.")
  manipulated = os.path.join(root, "manipulated_sequences")
  found_methods = sorted(os.listdir(manipulated)) if os.path.isdir(manipulated) else []
  for method in methods or ():
    if method not in found_methods:
      raise DataError(f"FF++ method {method!r} not under {manipulated!r}; found {found_methods}.")
  methods = tuple(methods or found_methods)
  sources = []  # (label, method, source folder name, quality, folder)
  youtube = any(m != "DeepFakeDetection" for m in methods)
  for source, wanted in (("youtube", youtube), ("actors", "DeepFakeDetection" in methods)):
    if wanted:
      for quality in qualities:
        sources.append(
          (0, "", source, quality, os.path.join(root, "original_sequences", source, quality))
        )
  for method in methods:
    for quality in qualities:
      sources.append((1, method, method, quality, os.path.join(manipulated, method, quality)))

  split_of = _ffpp_official_splits(splits_dir) if splits_dir else {}
  groups = _Groups()
  found = []
  for label, method, source, quality, folder in sources:
    videos_folder = os.path.join(folder, "videos")
    if not os.path.isdir(videos_folder):
      continue
    for path in list_videos(videos_folder):
      stem = _stem(path)
      if method == "DeepFakeDetection" or source == "actors":
        key = f"actors:{stem.split('_')[0]}"
        target = key
      else:
        ids = stem.split("_")
        key = f"youtube:{ids[0]}"
        target = ids[0]
        if len(ids) == 2:
          groups.join(key, f"youtube:{ids[1]}")
      groups.find(key)
      split = split_of.get(target, "") if source != "actors" else ""
      found.append((path, f"ffpp/{source}/{quality}/{stem}", label, key, split, method))
  if not found:
    raise DataError(
      f"{root}: no FF++ videos for methods {list(methods)} and qualities {list(qualities)}."
    )
  records = [
    VideoRecord(path, video_id, label, f"ffpp:{groups.find(key)}", "ffpp", split, method)
    for path, video_id, label, key, split, method in found
  ]
  return Catalogue(records)


# --- Celeb-DF v2 -----------------------------------------------------------------------------

_CELEB_FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
_CELEB_TEST_LIST = "List_of_testing_videos.txt"


def celeb_df(root: str) -> Catalogue:
  """Celeb-DF v2: `Celeb-real/`, `YouTube-real/`, `Celeb-synthesis/` and the test list.

  A fake `id<a>_id<b>_<n>` is made from real `id<a>_<n>`; both are grouped by
  identity `id<a>`. `List_of_testing_videos.txt` lines are `<label> <path>`
  where label 1 means REAL; those videos get split `test`.
  """
  if not all(os.path.isdir(os.path.join(root, f)) for f in ("Celeb-real", "Celeb-synthesis")):
    raise DataError(f"{root}: not a Celeb-DF v2 root (needs Celeb-real/ and Celeb-synthesis/).")
  catalogue = Catalogue([])
  test_labels = {}
  list_path = os.path.join(root, _CELEB_TEST_LIST)
  if os.path.isfile(list_path):
    with open(list_path, encoding="utf-8") as file:
      for number, line in enumerate(file, 1):
        if not line.strip():
          continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in ("0", "1"):
          raise DataError(
            f"{list_path}, line {number}: {line.strip()!r}; expected '<1 real|0 fake> <path>'."
          )
        relative = fields[1].replace("\\", "/")
        test_labels[relative] = 0 if fields[0] == "1" else 1
        if not os.path.isfile(os.path.join(root, relative)):
          catalogue.skipped.append(
            (os.path.join(root, relative), f"listed in {list_path} but absent")
          )
  for folder, label in _CELEB_FOLDERS.items():
    directory = os.path.join(root, folder)
    if not os.path.isdir(directory):
      continue
    for path in list_videos(directory):
      stem = _stem(path)
      relative = f"{folder}/{os.path.basename(path)}"
      identity = re.match(r"(id\d+)_", stem)
      group = f"celebdf:{identity.group(1)}" if identity else f"celebdf:{folder}/{stem}"
      if relative in test_labels and test_labels[relative] != label:
        catalogue.warnings.append(
          f"{relative}: {list_path} says {'REAL' if test_labels[relative] == 0 else 'FAKE'} "
          f"but it is in {folder}/; the folder's label is used."
        )
      catalogue.records.append(
        VideoRecord(
          path,
          f"celebdf/{folder}/{stem}",
          label,
          group,
          "celebdf",
          split="test" if relative in test_labels else "",
          method="celeb-synthesis" if label else "",
        )
      )
  return catalogue


# --- Generic ---------------------------------------------------------------------------------


def _relative_id(path: str, root: str) -> str:
  relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
  if relative.startswith(".."):
    relative = os.path.abspath(path).lstrip(os.sep)
  return os.path.splitext(relative)[0].replace(os.sep, "/")


def generic_csv(csv_path: str) -> Catalogue:
  """A CSV `path,label[,group][,split]`; paths relative to the CSV's folder or absolute."""
  if not os.path.isfile(csv_path):
    raise DataError(f"Video CSV {csv_path!r} does not exist.")
  table = io_utils.read_csv_table(csv_path, "path,label[,group][,split]")
  missing = [c for c in ("path", "label") if c not in table.columns]
  if missing:
    raise DataError(
      f"{csv_path}: missing column(s) {missing}; expected path,label[,group][,split], "
      f"found {list(table.columns)}."
    )
  folder = os.path.dirname(os.path.abspath(csv_path))
  catalogue = Catalogue([])
  table = drop_duplicate_rows(table, "path", csv_path)
  for row, record in zip(table.index, table.to_dict("records"), strict=True):
    label = parse_label(record["label"], row, csv_path)
    split = record.get("split", "").strip().lower()
    if split not in ("", "train", "validation", "test"):
      raise DataError(
        f"{csv_path}, line {row + 2}: split {record['split']!r}; expected train, "
        "validation, test or empty."
      )
    path = os.path.join(folder, record["path"])
    if not os.path.isfile(path):
      catalogue.skipped.append((path, f"line {row + 2} of {csv_path}; absent"))
      continue
    video_id = f"csv/{_relative_id(path, folder)}"
    group = record.get("group") or video_id
    catalogue.records.append(VideoRecord(path, video_id, label, group, "csv", split))
  return catalogue


def generic_folders(root: str) -> Catalogue:
  """Videos under `root/real/` and `root/fake/` (any depth)."""
  folders = {name: os.path.join(root, name) for name in ("real", "fake")}
  if not all(os.path.isdir(f) for f in folders.values()):
    raise DataError(f"{root}: expected real/ and fake/ folders of videos.")
  records = []
  for label, name in enumerate(("real", "fake")):
    for path in list_videos(folders[name]):
      video_id = f"folders/{_relative_id(path, root)}"
      records.append(VideoRecord(path, video_id, label, video_id, "folders"))
  return Catalogue(records)


def load_catalogue(
  dataset: str,
  source: str,
  ffpp_methods: tuple[str, ...] | None = None,
  ffpp_qualities: tuple[str, ...] = ("c23",),
  ffpp_splits_dir: str | None = None,
) -> Catalogue:
  """The adapter named `dataset` applied to `source` (a root folder, or a CSV for csv)."""
  if dataset == "dfdc":
    catalogue = dfdc(source)
  elif dataset == "ffpp":
    catalogue = faceforensics(source, ffpp_methods, ffpp_qualities, ffpp_splits_dir)
  elif dataset == "celebdf":
    catalogue = celeb_df(source)
  elif dataset == "csv":
    catalogue = generic_csv(source)
  elif dataset == "folders":
    catalogue = generic_folders(source)
  else:
    raise DataError(f"dataset {dataset!r}; expected one of {list(DATASETS)}.")
  seen = set()
  for record in catalogue.records:
    if record.video_id in seen:
      raise DataError(f"{source}: two videos map to the frames folder {record.video_id!r}.")
    seen.add(record.video_id)
  return catalogue
