"""The nine MER-UniBench datasets: where their files are and how they are scored.

One table, not code paths: folder, label file and key, label names, test split, transcript,
media folders and metric per dataset. Values come from the reference ``config.py`` and
``my_affectgpt/datasets/datasets/*.py``; entries marked ``uncertain`` were not confirmed there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.errors import BenchmarkError, InputError, MissingFileError
from core.paths import name_problem
from features.labels import labels_or_neutral, parse_openset

Metric = Literal["hit_rate", "sentiment", "ov"]


@dataclass(frozen=True)
class UniBenchDataset:
    name: str
    folder: str  # under the MER-UniBench root
    label_file: str
    label_key: str | None  # npz key; None for CSV label files
    metric: Metric
    test_size: int
    label_names: tuple[str, ...] = ()  # index -> label for integer-coded emotions
    test_split: str = "all"  # "all" or "iemocap_session5"
    transcript_file: str = "transcription-engchi-polish.csv"
    transcript_column: str = "english"
    video_folder: str = "video"
    video_ext: tuple[str, ...] = (".mp4",)
    audio_folder: str = "audio"
    face_folder: str = "openface_face"
    # MER2025-OV layout: openface_face/{name}/{name}.npy; the other sets keep openface_face/{name}.npy.
    face_nested: bool = False
    uncertain: tuple[str, ...] = field(default=())  # fields not confirmed against the reference

    def face_path(self, folder: Path, name: str) -> Path:
        """The OpenFace stack of sample ``name`` under the dataset's ``folder`` (a bad name: InputError)."""
        problem = name_problem(name)
        if problem:
            raise InputError(f"{self.name}: {problem}")
        faces = Path(folder) / self.face_folder
        return faces / name / f"{name}.npy" if self.face_nested else faces / f"{name}.npy"


DATASETS: dict[str, UniBenchDataset] = {
    d.name: d
    for d in (
        UniBenchDataset(
            "MER2023",
            "mer2023-dataset-process",
            "label-6way.npz",
            "test1_corpus",
            "hit_rate",
            411,
            video_ext=(".mp4", ".avi"),
        ),
        UniBenchDataset(
            "MER2024",
            "mer2024-dataset-process",
            "label-6way.npz",
            "test1_corpus",
            "hit_rate",
            1169,
            transcript_file="transcription_merge.csv",
            transcript_column="chinese",
            video_ext=(".mp4", ".avi"),
        ),
        UniBenchDataset(
            "IEMOCAPFour",
            "iemocap-process",
            "label_4way.npz",
            "whole_corpus",
            "hit_rate",
            1241,
            label_names=("happy", "sad", "neutral", "anger"),
            test_split="iemocap_session5",
            video_folder="subvideo-tgt",
            video_ext=(".avi",),
            audio_folder="subaudio",
        ),
        UniBenchDataset(
            "MELD",
            "meld-process",
            "label.npz",
            "test_corpus",
            "hit_rate",
            2610,
            label_names=("anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise"),
            video_folder="subvideo",
            audio_folder="subaudio",
        ),
        UniBenchDataset(
            "CMUMOSI",
            "cmumosi-process",
            "label.npz",
            "test_corpus",
            "sentiment",
            686,
            video_folder="subvideo",
            audio_folder="subaudio",
        ),
        UniBenchDataset(
            "CMUMOSEI",
            "cmumosei-process",
            "label.npz",
            "test_corpus",
            "sentiment",
            4659,
            video_folder="subvideo_new",
            audio_folder="subaudio",
            uncertain=("video_ext",),
        ),
        UniBenchDataset(
            "SIMS",
            "sims-process",
            "label.npz",
            "test_corpus",
            "sentiment",
            457,
            uncertain=("video_ext",),
        ),
        UniBenchDataset(
            "SIMSv2",
            "simsv2-process",
            "label.npz",
            "test_corpus",
            "sentiment",
            1034,
            video_folder="video_new",
        ),
        UniBenchDataset(
            "OVMERDPlus",
            "ovmerdplus-process",
            "ovlabel.csv",
            None,
            "ov",
            532,
            # The release reads OV-MERD+ in the MER2025-OV layout.
            transcript_file="subtitle_chieng.csv",
            transcript_column="english",
            face_nested=True,
        ),
    )
}

_ALIASES = {
    "iemocap": "IEMOCAPFour",
    "iemocap4": "IEMOCAPFour",
    "mosi": "CMUMOSI",
    "cmu-mosi": "CMUMOSI",
    "mosei": "CMUMOSEI",
    "cmu-mosei": "CMUMOSEI",
    "simsv2": "SIMSv2",
    "sims-v2": "SIMSv2",
    "ov-merd+": "OVMERDPlus",
    "ovmerd+": "OVMERDPlus",
    "ovmerdplus": "OVMERDPlus",
}


def get_dataset(name: str) -> UniBenchDataset:
    """Look a dataset up by its reference name (case-insensitive) or a common alias."""
    key = name.strip().lower()
    for canonical in DATASETS:
        if canonical.lower() == key:
            return DATASETS[canonical]
    if key in _ALIASES:
        return DATASETS[_ALIASES[key]]
    raise BenchmarkError(f"unknown MER-UniBench dataset {name!r} (known: {', '.join(DATASETS)})")


# A file in a ``*-process`` folder that says its media and labels are synthetic (`synth.unibench`
# writes it): reports on such folders say so and are not set beside the paper's numbers.
SYNTHETIC_MARKER = "SYNTHETIC.txt"


def is_synthetic(folder: str | Path) -> bool:
    """Whether a dataset folder was written by the synthetic MER-UniBench generator."""
    return (Path(folder) / SYNTHETIC_MARKER).is_file()


def is_test_name(dataset: UniBenchDataset, name: str) -> bool:
    if dataset.test_split == "iemocap_session5":
        # IEMOCAP names look like Ses05F_impro01_F000: the 5th character is the session.
        return len(name) > 4 and name[4] == "5"
    return True


def _gold_value(dataset: UniBenchDataset, name: str, entry: Any, path: Path) -> Any:
    if not isinstance(entry, dict):
        raise InputError(f"{path}: sample {name!r} holds a {type(entry).__name__}, expected a dict")
    if dataset.metric == "sentiment":
        if "val" not in entry:
            raise InputError(f"{path}: sample {name!r} has no 'val'")
        try:
            return float(entry["val"])
        except (TypeError, ValueError):
            raise InputError(f"{path}: sample {name!r} has val {entry['val']!r}, not a number") from None
    if "emo" not in entry:
        raise InputError(f"{path}: sample {name!r} has no 'emo'")
    emo = entry["emo"]
    if isinstance(emo, str):
        return emo
    # Integer-coded (IEMOCAP, MELD): index into the dataset's label names.
    try:
        index = int(emo)
    except (TypeError, ValueError):
        raise InputError(f"{path}: sample {name!r} has emo {emo!r}, neither a label nor an index") from None
    if not 0 <= index < len(dataset.label_names):
        raise InputError(
            f"{path}: sample {name!r} has emotion index {index}, "
            f"outside {list(dataset.label_names)}"
        )
    return dataset.label_names[index]


def load_gold(dataset: str | UniBenchDataset, path: str | Path) -> dict[str, Any]:
    """Gold labels of the test split: ``{name: str}`` (hit rate), ``{name: float}`` (sentiment)
    or ``{name: [labels]}`` (OV). ``path`` is the label file, or the dataset folder holding it.

    Accepts the dataset's own npz (read with the restricted unpickler) or a CSV with ``name``
    and ``openset`` (OV and hit-rate sets) / ``val`` (sentiment sets).
    """
    ds = dataset if isinstance(dataset, UniBenchDataset) else get_dataset(dataset)
    path = Path(path)
    if path.is_dir():
        path = path / ds.label_file
    if not path.is_file():
        raise MissingFileError(f"gold label file {path} does not exist")
    if path.suffix == ".csv":
        return _load_gold_csv(ds, path)
    from scoring.safe_npz import load_key

    corpus = load_key(path, ds.label_key or "test_corpus")
    if not isinstance(corpus, dict):
        raise InputError(
            f"{path}: {ds.label_key!r} holds a {type(corpus).__name__}, expected a dict"
        )
    gold = {
        str(n): _gold_value(ds, str(n), e, path)
        for n, e in corpus.items()
        if is_test_name(ds, str(n))
    }
    if ds.metric == "ov":
        gold = {n: labels_or_neutral(parse_openset(v)) for n, v in gold.items()}
    return dict(sorted(gold.items()))


def _load_gold_csv(ds: UniBenchDataset, path: Path) -> dict[str, Any]:
    import pandas as pd

    try:
        df = pd.read_csv(path, keep_default_na=False, dtype=str)
    except ValueError as exc:  # pandas' ParserError, EmptyDataError, UnicodeDecodeError
        raise InputError(f"{path}: cannot read it as a CSV: {exc}") from None
    column = "val" if ds.metric == "sentiment" else "openset"
    for c in ("name", column):
        if c not in df.columns:
            raise InputError(
                f"{path}: missing column {c!r} (has {list(df.columns)}); "
                f"{ds.name} gold needs name,{column}"
            )
    gold: dict[str, Any] = {}
    for row, (name, value) in enumerate(zip(df["name"], df[column], strict=True), start=2):
        if not is_test_name(ds, name):
            continue
        if ds.metric == "sentiment":
            try:
                gold[name] = float(value)
            except ValueError:
                raise InputError(f"{path} row {row}: val {value!r} is not a number") from None
        elif ds.metric == "ov":
            # The reference's OVMERDPlus reader turns an empty list into ["neutral"].
            gold[name] = labels_or_neutral(parse_openset(value))
        else:
            labels = parse_openset(value)
            if len(labels) != 1:
                raise InputError(
                    f"{path} row {row}: {ds.name} expects one gold label, got {value!r}"
                )
            gold[name] = labels[0]
    return dict(sorted(gold.items()))


def dataset_folder(dataset: str | UniBenchDataset, root: str | Path) -> Path:
    """The dataset's ``*-process`` folder: ``root/<folder>``, or ``root`` itself when it is one."""
    ds = dataset if isinstance(dataset, UniBenchDataset) else get_dataset(dataset)
    root = Path(root)
    if (root / ds.folder).is_dir():
        return root / ds.folder
    if root.name == ds.folder or (root / ds.label_file).is_file():
        if not root.is_dir():
            raise MissingFileError(f"{ds.name} folder {root} does not exist")
        return root
    if not root.is_dir():
        raise MissingFileError(f"MER-UniBench root {root} does not exist")
    raise MissingFileError(
        f"{ds.name}: folder {root / ds.folder} does not exist (expected the MER-UniBench root "
        f"holding {ds.folder}/, or that folder itself)"
    )


def find_media(folder: Path, name: str, exts: tuple[str, ...]) -> Path | None:
    """``folder/{name}{ext}`` for the first ``ext`` that exists; None for a name that is not one path
    component (gold names come from label files we do not trust: ``../../x`` must not resolve)."""
    if name_problem(name):
        return None
    for ext in exts:
        path = folder / f"{name}{ext}"
        if path.is_file():
            return path
    return None
