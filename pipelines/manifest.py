"""Manifest readers: a corpus on disk -> one `ManifestRow` per sample.

Three layouts: the MER2025 root (`read_mer2025`), a plain folder of videos with an optional
subtitle CSV (`read_folder`), and WebDataset tar shards (`read_webdataset`, a Ray dataset).
Readers never raise on a bad row: a bad name, a missing file or a non-UTF-8 subtitle becomes
a row whose ``error`` names the file, so the job records it as a failed sample and goes on.
"""

from __future__ import annotations

import csv
import io
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from core.errors import InputError, MissingFileError
from core.paths import name_problem
from features.labels import parse_openset, read_corpus_labels
from scoring.unibench import UniBenchDataset, dataset_folder, find_media, get_dataset, load_gold

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm")
SUBTITLE_CSV = "subtitle_chieng.csv"
# Column holding the subtitle text, in order of preference.
SUBTITLE_COLUMNS = ("english", "subtitle", "text", "transcript")
# Cells pandas' read_csv reads as missing by default (its documented na_values, pandas 2.2.3 as the release
# pins it); the release reads subtitles with read_csv and makes a missing one "" (e.g. mer2023.py lines 53-57),
# so a subtitle "NA", "None", "null" or "nan" reaches its prompt as an empty subtitle. Matched on the raw cell.
PANDAS_NA_CELLS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                             "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


@dataclass
class ManifestRow:
    """One sample to preprocess: media paths ("" when absent), subtitle, labels, and why it is bad."""

    name: str
    video: str = ""
    audio: str = ""
    face: str = ""
    subtitle: str = ""
    openset: list[str] | None = None  # None: no label row; []: labelled with an empty list (neutral)
    reason: str = ""  # "": no description
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def name_error(name: Any) -> str:
    """Why ``name`` cannot be a sample name ("" when it can), as a row error (`core.paths.name_problem`)."""
    problem = name_problem(name)
    return f"manifest/bad-name: {problem}" if problem else ""


def unique_by_name(rows: Iterable) -> list:
    """``rows`` (`ManifestRow`s or dicts with a ``name``) with each name once, in order.

    The first occurrence of a name wins and later ones are dropped, whatever their content (a
    bad CSV row before the real video keeps the bad row): one name is one sample, one row of a
    store part or of a label table. Manifest order decides, so a rerun keeps the same row.
    """
    seen: set[str] = set()
    out = []
    for r in rows:
        name = r["name"] if isinstance(r, Mapping) else r.name
        if name not in seen:
            seen.add(name)
            out.append(r)
    return out


# The longest cell a manifest CSV may hold (Python's csv module refuses longer ones by default
# and raised out of the reader, ending the job); a longer cell fails its row only.
MAX_CSV_FIELD_CHARS = 131_072
_CSV_LIMIT = threading.Lock()  # csv.field_size_limit is process-wide


def read_csv_rows(path: Path | str, data: bytes | None = None) -> list[tuple[int, dict[str, str], str]]:
    """``(line, row, error)`` for each data row; a cell that is not UTF-8, or longer than
    ``MAX_CSV_FIELD_CHARS``, gives that row an error (the long cell is dropped).

    ``data``: the file's bytes when it is not on local disk (``path`` then only names it).

    Decoding with ``surrogateescape`` keeps one bad byte from costing the whole file: only the
    rows holding it fail, and the message names the file and line.
    """
    data = Path(path).read_bytes() if data is None else data
    text = data.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    with _CSV_LIMIT:
        # Parse cells of any length (the file is in memory already); each row's are checked below.
        saved = csv.field_size_limit(max(len(text) + 1, MAX_CSV_FIELD_CHARS))
        try:
            fieldnames = reader.fieldnames
            parsed = [(reader.line_num, row) for row in reader]
        except csv.Error as exc:  # not raised by the default dialect with the limit above
            raise InputError(f"{path} line {reader.line_num}: not a CSV row ({exc})") from None
        finally:
            csv.field_size_limit(saved)
    if fieldnames is None or "name" not in fieldnames:
        raise InputError(f"{path}: expected a header row with a 'name' column, got {fieldnames}")
    out = []
    for line, row in parsed:
        bad = [k for k, v in row.items() if isinstance(v, str) and _has_surrogates(v)]
        error = f"subtitle/not-utf8: {path} line {line}: column(s) {bad} are not valid UTF-8" if bad else ""
        clean = {k: (v if isinstance(v, str) else "") for k, v in row.items() if k is not None}
        long = [k for k, v in clean.items() if len(v) > MAX_CSV_FIELD_CHARS]
        if long:
            error = (f"manifest/field-too-large: {path} line {line}: column(s) {long} hold over "
                     f"{MAX_CSV_FIELD_CHARS:,} characters")
            # A long name is kept cut (the row fails under it); other long cells are dropped.
            clean = {k: (v[:80] + "…" if k == "name" else "") if k in long else v for k, v in clean.items()}
        if bad:
            clean = {k: v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for k, v in clean.items()}
        out.append((line, clean, error))
    return out


_SURROGATE = re.compile("[\udc80-\udcff]")  # the bytes surrogateescape could not decode


def _has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def subtitle_cell(value: str | None) -> str:
    """A subtitle cell as the release's prompt receives it: "" for a cell pandas reads as missing
    (:data:`PANDAS_NA_CELLS`), else the text (stripped)."""
    if value is None or value in PANDAS_NA_CELLS:
        return ""
    return value.strip()


def _subtitle_of(row: dict[str, str]) -> str:
    for col in SUBTITLE_COLUMNS:
        if subtitle_cell(row.get(col)):
            return subtitle_cell(row[col])
    return ""


class CorpusRoot:
    """A corpus root on local disk or behind an fsspec URL (``s3://bucket/mer2025-dataset``).

    Holds only what the MER2025 reader needs; media paths of a URL root stay URLs, which the
    decode stage fetches (`pipelines.stages.fetch_media`).
    """

    def __init__(self, root: str | Path, storage_options: dict | None = None):
        self.url = "://" in str(root)
        if self.url:
            import fsspec

            self.fs, self.base = fsspec.core.url_to_fs(str(root), **(storage_options or {}))
            self.root = str(root).rstrip("/")
        else:
            self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts]) if self.url else str(self.root.joinpath(*parts))

    def _remote(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts])

    def is_dir(self, *parts: str) -> bool:
        return self.fs.isdir(self._remote(*parts)) if self.url else self.root.joinpath(*parts).is_dir()

    def is_file(self, *parts: str) -> bool:
        return self.fs.isfile(self._remote(*parts)) if self.url else self.root.joinpath(*parts).is_file()

    def csv_rows(self, name: str) -> list[tuple[int, dict[str, str], str]]:
        data = self.fs.cat_file(self._remote(name)) if self.url else None
        return read_csv_rows(self.path(name), data)

    def stems(self, folder: str, suffix: str) -> set[str]:
        """File stems in ``folder`` ending with ``suffix`` (one listing, also for 100k objects)."""
        if not self.url:
            return {p.stem for p in self.root.joinpath(folder).glob(f"*{suffix}")}
        if not self.is_dir(folder):
            return set()
        names = (p.rsplit("/", 1)[-1] for p in self.fs.ls(self._remote(folder), detail=False))
        return {n[: -len(suffix)] for n in names if n.endswith(suffix)}


def read_mer2025(root: str | Path, subtitle_csv: str = SUBTITLE_CSV,
                 storage_options: dict | None = None, follow_symlinks: bool = False) -> list[ManifestRow]:
    """Rows for every name in the subtitle CSV or the ``video/`` folder, sorted by name.

    Paths: ``video/{name}.mp4``, ``audio/{name}.wav`` (optional: the job falls
    back to the video's audio track), ``openface_face/{name}/{name}.npy``. ``root`` may be an
    fsspec URL (``s3://...``, with ``storage_options``); the rows then hold URLs. Labels are the
    training subset's track-2/track-3 rows (`features.labels.read_corpus_labels`). On a local root a
    row whose media is a link out of the root fails as in a folder corpus (:func:`link_error`).
    """
    root = CorpusRoot(root, storage_options)
    if not root.is_dir():
        raise MissingFileError(f"corpus root {root} is not a directory")
    if not root.is_dir("video") and not root.is_file(subtitle_csv):
        raise MissingFileError(f"{root} has neither video/ nor {subtitle_csv}: not a MER2025 layout")
    subtitles: dict[str, tuple[str, str]] = {}
    bad_rows: list[ManifestRow] = []
    if root.is_file(subtitle_csv):
        for line, row, err in root.csv_rows(subtitle_csv):
            name = row.get("name", "")
            bad = name_error(name)
            if bad:
                where = f"{root.path(subtitle_csv)} line {line}"
                bad_rows.append(ManifestRow(name=str(name), error=f"{bad} ({where})"))
                continue
            subtitles.setdefault(name, (_subtitle_of(row), err))
    names = set(subtitles)
    videos = root.stems("video", ".mp4")
    wavs = root.stems("audio", ".wav")
    names.update(videos)
    labels = read_corpus_labels(str(root), storage_options=storage_options)
    openset = dict(zip(labels["name"], labels["openset"]))
    reason = dict(zip(labels["name"], labels["reason"]))
    rows = list(bad_rows)
    for name in sorted(names):
        subtitle, err = subtitles.get(name, ("", ""))
        video = root.path("video", f"{name}.mp4")
        wav = root.path("audio", f"{name}.wav")
        face = root.path("openface_face", name, f"{name}.npy")
        # A name from a file stem is checked too: video/...mp4 has the stem "..".
        err = err or name_error(name)
        if not err and name not in videos:
            err = f"manifest/missing-file: {subtitle_csv} names {name!r} but {video} does not exist"
        if not err and not root.url:
            err = media_link_error((video, wav if name in wavs else "", face), root.root, follow_symlinks)
        rows.append(ManifestRow(
            name=name, video=video, audio=wav if name in wavs else "", face=face,
            subtitle=subtitle, openset=openset.get(name), reason=reason.get(name) or "", error=err,
        ))
    return rows


def link_error(path: Path, root: Path, follow_symlinks: bool = False) -> str:
    """The failure of a symbolic link in a folder corpus, or "" when it may be read.

    A dangling link always fails; a link whose target is outside ``root`` fails unless
    ``follow_symlinks`` (a corpus folder must not become a way to read any file on the machine).
    """
    if not path.is_symlink():
        return ""
    target = path.resolve()
    if not target.exists():
        return f"manifest/dangling-link: {path} -> {os.readlink(path)} does not exist"
    if not follow_symlinks and not target.is_relative_to(root.resolve()):
        return (f"manifest/link-outside-root: {path} -> {target} leaves the corpus root {root} "
                "(pass --follow-symlinks to read it)")
    return ""


def media_link_error(paths: Iterable[str | Path], root: Path, follow_symlinks: bool = False) -> str:
    """:func:`link_error` of the first of a row's media files (or a folder on its way) that is a link
    refused under ``root``; "" when none is. A file that is not there is left to the reader's own error."""
    base = root.resolve()
    for path in paths:
        if not path:
            continue
        path = Path(path)
        if not os.path.lexists(path):
            continue
        if path.is_symlink():
            refused = link_error(path, root, follow_symlinks)
        elif not follow_symlinks and not path.resolve().is_relative_to(base):  # a linked folder on its way
            refused = (f"manifest/link-outside-root: {path} -> {path.resolve()} leaves the corpus root {root} "
                       "(pass --follow-symlinks to read it)")
        else:
            refused = ""
        if refused:
            return refused
    return ""


def read_folder(root: str | Path, subtitles: str | Path | None = None,
                extensions: Iterable[str] = VIDEO_EXTENSIONS, follow_symlinks: bool = False) -> list[ManifestRow]:
    """Rows for every video under ``root`` (recursive; name = file stem) plus an optional subtitle CSV.

    The CSV needs ``name`` and one of ``english``/``subtitle``/``text``/``transcript``; a row
    naming a video that is not there is a failed row. A ``subtitles.csv`` in ``root`` is picked up.
    Symbolic links follow :func:`link_error`: a refused one is a failed row naming the link and target.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"video folder {root} is not a directory")
    exts = {e.lower() for e in extensions}
    videos: dict[str, Path] = {}
    rows: list[ManifestRow] = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and (p.is_file() or p.is_symlink())):
        refused = link_error(path, root, follow_symlinks)
        if refused:
            rows.append(ManifestRow(name=path.stem, video=str(path), error=refused))
            continue
        if path.stem in videos:
            rows.append(ManifestRow(name=path.stem, video=str(path),
                                    error=f"manifest/duplicate-name: {path} and {videos[path.stem]} share the name"))
            continue
        videos[path.stem] = path
    if subtitles is None and (root / "subtitles.csv").is_file():
        subtitles = root / "subtitles.csv"
    texts: dict[str, tuple[str, str]] = {}
    if subtitles is not None:
        csv_path = Path(subtitles)
        if not csv_path.is_file():
            raise MissingFileError(f"subtitle CSV {csv_path} does not exist")
        for line, row, err in read_csv_rows(csv_path):
            name = row.get("name", "")
            bad = name_error(name)
            if bad:
                rows.append(ManifestRow(name=str(name), error=f"{bad} ({csv_path} line {line})"))
            elif name not in videos:
                rows.append(ManifestRow(name=name, error=(
                    f"manifest/missing-file: {csv_path} line {line} names {name!r} but no video "
                    f"{'|'.join(sorted(exts))} with that stem exists under {root}")))
            else:
                texts.setdefault(name, (_subtitle_of(row), err))
    for name, path in sorted(videos.items()):
        subtitle, err = texts.get(name, ("", ""))
        rows.append(ManifestRow(name=name, video=str(path), subtitle=subtitle,
                                error=err or name_error(name)))
    return rows


def read_manifest(corpus: str | Path, layout: str, storage_options: dict | None = None,
                  follow_symlinks: bool = False) -> list[ManifestRow]:
    """The rows of a corpus by layout (``mer2025`` on a local path or fsspec URL, ``folder`` local only)."""
    if layout == "mer2025":
        return read_mer2025(corpus, storage_options=storage_options, follow_symlinks=follow_symlinks)
    if layout == "folder":
        if "://" in str(corpus):
            raise InputError(f"layout 'folder' reads local folders only, got {corpus}: "
                             "use mer2025 or webdataset")
        return read_folder(corpus, follow_symlinks=follow_symlinks)
    raise InputError(f"layout {layout!r} has no list reader (webdataset streams: use read_webdataset)")


def webdataset_paths(corpus: str | Path) -> list[str]:
    """The ``.tar`` shards of a WebDataset corpus: a directory of shards, one shard, or a list file."""
    text = str(corpus)
    if "://" in text:  # object storage: Ray's reader lists the prefix itself
        return [text]
    path = Path(text)
    if path.is_dir():
        shards = sorted(str(p) for p in path.rglob("*.tar"))
        if not shards:
            raise MissingFileError(f"no .tar shards under {path}")
        return shards
    if path.is_file():
        return [str(path)]
    raise MissingFileError(f"WebDataset corpus {path} does not exist")


def webdataset_row(sample: dict[str, Any]) -> dict[str, Any]:
    """A WebDataset sample (``__key__``, ``mp4``/``avi``/…, ``wav``, ``npy`` face stack, ``json``) -> manifest
    columns + media bytes."""
    import json

    name = str(sample.get("__key__", "")).rsplit("/", 1)[-1]
    video_bytes, video_ext = b"", ""
    for ext in ("mp4", "avi", "mkv", "webm"):
        if sample.get(ext) is not None:
            video_bytes, video_ext = bytes(sample[ext]), ext
            break
    meta = sample.get("json")
    error = name_error(name)
    if isinstance(meta, (bytes, bytearray)):
        try:
            meta = json.loads(meta.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            error = error or f"subtitle/not-utf8: shard member {name}.json is not UTF-8 JSON ({exc})"
            meta = {}
    meta = meta if isinstance(meta, dict) else {}
    if not error and not video_bytes:
        error = f"manifest/missing-file: shard sample {name!r} has no .mp4/.avi/.mkv/.webm member"
    return {
        **ManifestRow(
            name=name, video=f"{name}.{video_ext}" if video_ext else "",
            audio=f"{name}.wav" if sample.get("wav") is not None else "",
            face=f"{name}.npy" if sample.get("npy") is not None else "",
            subtitle=str(meta.get("subtitle") or meta.get("english") or ""),
            openset=None if meta.get("openset") is None else parse_openset(meta["openset"]),
            reason=str(meta.get("reason") or ""),
            error=error,
        ).to_dict(),
        "video_bytes": video_bytes,
        "audio_bytes": bytes(sample["wav"]) if sample.get("wav") is not None else b"",
        "face_bytes": bytes(sample["npy"]) if sample.get("npy") is not None else b"",
    }


def read_webdataset(corpus: str | Path, storage_options: dict | None = None, num_cpus: float = 0.1):
    """A Ray dataset of manifest rows (plus ``video_bytes``/``audio_bytes``/``face_bytes``) from WebDataset shards.

    ``num_cpus`` per read task: fractional, or on a small machine the read starves the actor pools.
    """
    import ray.data

    paths = webdataset_paths(corpus)
    filesystem = None
    if storage_options and "://" in str(corpus):
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs, _ = fsspec.core.url_to_fs(str(corpus), **storage_options)
        filesystem = PyFileSystem(FSSpecHandler(fs))
    # decoder=None: every member stays bytes (decoder=False still runs Ray's default decoder,
    # which np.loads .npy in the read task); the stages decode them like files, pickle off.
    ds = ray.data.read_webdataset(paths, filesystem=filesystem, decoder=None, num_cpus=num_cpus)
    return ds.map(webdataset_row, num_cpus=num_cpus)


def read_unibench(dataset: str | UniBenchDataset, root: str | Path) -> list:
    """One ``ManifestRow`` per test sample of ``dataset`` under ``root``, sorted by name.

    Paths come from the dataset's table entry: ``<video_folder>/{name}<ext>``,
    ``<audio_folder>/{name}.wav`` (optional: the audio track is the fallback),
    the face stack (:meth:`UniBenchDataset.face_path`) and the transcript CSV's column. A missing folder, label file,
    transcript file or video folder raises, naming it; a sample whose video is missing becomes
    a row with ``error`` set (bad input is data). ``openset`` holds the gold
    labels for the discrete and OV sets (empty for sentiment sets).
    """
    ds = dataset if isinstance(dataset, UniBenchDataset) else get_dataset(dataset)
    folder = dataset_folder(ds, root)
    label_path = folder / ds.label_file
    if not label_path.is_file():
        raise MissingFileError(f"{ds.name}: label file {label_path} does not exist")
    gold = load_gold(ds, label_path)
    transcript_path = folder / ds.transcript_file
    if not transcript_path.is_file():
        raise MissingFileError(f"{ds.name}: transcript file {transcript_path} does not exist")
    texts: dict[str, tuple[str, str]] = {}
    for line, row, err in read_csv_rows(transcript_path):
        if ds.transcript_column not in row:
            raise InputError(
                f"{transcript_path}: missing column {ds.transcript_column!r} "
                f"(has {sorted(row)}); {ds.name} reads its subtitle from it"
            )
        texts.setdefault(row["name"], (subtitle_cell(row[ds.transcript_column]), err))
    video_dir = folder / ds.video_folder
    if not video_dir.is_dir():
        raise MissingFileError(f"{ds.name}: video folder {video_dir} does not exist")
    audio_dir = folder / ds.audio_folder
    rows = []
    for name in sorted(gold):
        subtitle, err = texts.get(name, ("", ""))
        bad = name_error(name)
        if bad:  # a gold name from the label file names no file: never joined to a folder
            rows.append(ManifestRow(name=name, error=f"{bad} ({label_path})"))
            continue
        video = find_media(video_dir, name, ds.video_ext)
        if video is None and not err:
            err = (
                f"manifest/missing-file: {ds.name} sample {name!r} has no "
                f"{'|'.join(ds.video_ext)} video in {video_dir}"
            )
        wav = audio_dir / f"{name}.wav"
        face = ds.face_path(folder, name)
        if not err:  # the links of a benchmark folder are refused as in every layout
            err = media_link_error((video, wav, face), folder)
        value = gold[name]
        openset = [] if ds.metric == "sentiment" else (
            list(value) if isinstance(value, list) else [value]
        )
        rows.append(
            ManifestRow(
                name=name,
                video=str(video) if video else "",
                audio=str(wav) if wav.is_file() else "",
                face=str(face) if face.is_file() else "",
                subtitle=subtitle,
                openset=openset,
                error=err,
            )
        )
    return rows
