"""The emotion wheels of MER-UniBench: map free label words onto wheel level-1 words.

Resources (the AffectGPT authors' ``emotion_wheel/`` folder, Apache-2.0, shipped in
``scoring/emotion_wheel/``; ``--wheel DIR`` reads another copy):
``format.csv`` (surface forms of each base word), ``synonym.xlsx`` (8 synonym runs) and
``wheel1.xlsx``..``wheel5.xlsx`` (level1/level2/level3 trees). Reading follows the reference
``my_affectgpt/evaluation/wheel.py`` (``read_format2raws``, ``read_candidate_synonym_merge``,
``read_wheel_to_map``, ``func_get_wheel_cluster``, ``func_backward_case3``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable

from core.errors import MissingFileError, WheelError
from features.labels import split_list_text

N_WHEELS = 5
N_SYNONYM_RUNS = 8
FORMAT_FILE = "format.csv"
SYNONYM_FILE = "synonym.xlsx"


def default_wheel_dir() -> Path:
    """The emotion-wheel files shipped inside this package."""
    # pip installs the package as a plain folder (regular or editable), so this is a real path.
    return Path(str(resources.files("scoring") / "emotion_wheel"))


def resolve_wheel_dir(wheel_dir: str | Path | None) -> Path:
    """``wheel_dir`` itself, or the packaged files when it is None or empty."""
    if wheel_dir is None or str(wheel_dir) == "":
        return default_wheel_dir()
    return Path(wheel_dir).expanduser()


def _require(path: Path) -> Path:
    if not path.is_file():
        raise MissingFileError(
            f"emotion wheel: {path} is missing (the folder must hold {FORMAT_FILE}, {SYNONYM_FILE} "
            f"and wheel1.xlsx..wheel{N_WHEELS}.xlsx)"
        )
    return path


def _read_table(path: Path, reader):
    """``reader(path)`` (pandas' read_csv or read_excel); a file it cannot parse is a ``WheelError``."""
    import zipfile

    try:
        return reader(_require(path))
    # ParserError and "format cannot be determined" are ValueErrors; a zip that is no xlsx gives
    # a KeyError, a truncated one BadZipFile.
    except (ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise WheelError(f"emotion wheel: cannot read {path}: {exc}") from None


def _require_columns(df, path: Path, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise WheelError(
            f"emotion wheel: {path} lacks column(s) {missing} (has {list(map(str, df.columns))})"
        )


def _is_blank(value) -> bool:
    import pandas as pd

    return value is None or (not isinstance(value, str) and pd.isna(value))


def read_format(path: Path) -> dict[str, list[str]]:
    """Surface form -> base words whose row lists it; every base word also maps to itself."""
    import pandas as pd

    # pandas' default NA handling on purpose: it is how the reference reads this file
    # (the empty `format` cell of "no words" becomes no forms).
    df = _read_table(path, pd.read_csv)
    _require_columns(df, path, ("name", "format"))
    form2bases: dict[str, list[str]] = {}
    for base, forms in zip(df["name"], df["format"], strict=True):
        if _is_blank(base):
            continue
        base = str(base)
        # The reference keeps the forms' case (all are lower case in the released file).
        for form in split_list_text("" if _is_blank(forms) else str(forms)):
            form2bases.setdefault(form, []).append(base)
        form2bases.setdefault(base, []).append(base)
    return form2bases


def read_synonyms(path: Path) -> dict[str, list[str]]:
    """Synonym (or the word itself) -> wheel words, the union over the 8 runs."""
    import pandas as pd

    df = _read_table(path, pd.read_excel)
    columns = [
        f"{kind}_run{r}" for r in range(1, N_SYNONYM_RUNS + 1) for kind in ("word", "synonym")
    ]
    _require_columns(df, path, columns)
    merged: dict[str, set[str]] = {}
    for r in range(1, N_SYNONYM_RUNS + 1):
        for row, (word, synonyms) in enumerate(
            zip(df[f"word_run{r}"], df[f"synonym_run{r}"], strict=True), start=2
        ):
            if _is_blank(word):
                raise WheelError(f"emotion wheel: {path} row {row}: empty word_run{r}")
            word = str(word).strip().lower()
            merged.setdefault(word, set()).add(word)
            for synonym in split_list_text("" if _is_blank(synonyms) else str(synonyms)):
                merged.setdefault(synonym.strip().lower(), set()).add(word)
    return {k: sorted(v) for k, v in merged.items()}


def read_wheel_tree(path: Path) -> dict[str, dict[str, list[str]]]:
    """``{level1: {level2: [level3, ...]}}``; a blank cell repeats the value above it."""
    import pandas as pd

    df = _read_table(path, pd.read_excel)
    _require_columns(df, path, ("level1", "level2", "level3"))
    tree: dict[str, dict[str, list[str]]] = {}
    current = {"level1": "", "level2": "", "level3": ""}
    for l1, l2, l3 in zip(df["level1"], df["level2"], df["level3"], strict=True):
        for key, value in (("level1", l1), ("level2", l2), ("level3", l3)):
            if not _is_blank(value):
                current[key] = str(value).lower().strip()
        tree.setdefault(current["level1"], {}).setdefault(current["level2"], []).append(
            current["level3"]
        )
    return tree


def level1_grouping(tree: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    """Every word of a level-1 subtree -> its level-1 word.

    Written in the tree's order, so a word listed under two subtrees keeps the later one,
    as the reference's ``func_get_wheel_cluster(level='level1')`` does.
    """
    grouping: dict[str, str] = {}
    for l1, children in tree.items():
        grouping[l1] = l1
        for l2, leaves in children.items():
            grouping[l2] = l1
            for l3 in leaves:
                grouping[l3] = l1
    return grouping


@dataclass
class EmotionWheel:
    """The loaded resources; ``map_label``/``map_labels`` are the scorer's per-label step."""

    root: Path
    form2bases: dict[str, list[str]]
    synonym2words: dict[str, list[str]]
    groupings: tuple[dict[str, str], ...]
    _candidates: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    _memo: dict[tuple[str, int], str | None] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, root: str | Path | None = None) -> "EmotionWheel":
        """Read (once per folder and file version) the resources under ``root`` (default: packaged)."""
        root = resolve_wheel_dir(root)
        if not root.is_dir():
            raise MissingFileError(
                f"emotion wheel folder {root} does not exist (set --wheel or score.wheel_dir)"
            )
        files = [root / FORMAT_FILE, root / SYNONYM_FILE] + [
            root / f"wheel{k}.xlsx" for k in range(1, N_WHEELS + 1)
        ]
        stamp = (str(root.resolve()),) + tuple(_require(p).stat().st_mtime_ns for p in files)
        with _CACHE_LOCK:
            cached = _CACHE.get(stamp)
            if cached is None:
                cached = cls(
                    root=root,
                    form2bases=read_format(files[0]),
                    synonym2words=read_synonyms(files[1]),
                    groupings=tuple(level1_grouping(read_wheel_tree(p)) for p in files[2:]),
                )
                _CACHE[stamp] = cached
            return cached

    def is_known(self, label: str) -> bool:
        return label.lower().strip() in self.form2bases

    def _sorted_candidates(self, label: str) -> tuple[str, ...]:
        found = self._candidates.get(label)
        if found is None:
            words: list[str] = []
            for base in self.form2bases[label]:
                # The reference indexes the synonym map directly (a KeyError for a base word
                # it lacks); every base word of the released files is present, so skipping
                # an absent one changes nothing there.
                words.extend(self.synonym2words.get(base, ()))
            found = tuple(sorted(words))
            self._candidates[label] = found
        return found

    def map_label(self, label: str, k: int) -> str | None:
        """Level-1 word of wheel ``k`` (1..5) for one label, or None when it drops out."""
        if not 1 <= k <= len(self.groupings):
            raise ValueError(f"wheel index must be within 1..{len(self.groupings)}, got {k}")
        label = label.lower().strip()
        key = (label, k)
        if key in self._memo:
            return self._memo[key]
        result = None
        if label in self.form2bases:
            grouping = self.groupings[k - 1]
            for word in self._sorted_candidates(label):
                if word in grouping:
                    result = grouping[word]
                    break
        self._memo[key] = result
        return result

    def map_labels(self, labels: Iterable[str], k: int) -> set[str]:
        """The set of level-1 words of wheel ``k`` for a label list (unmappable labels dropped)."""
        out = set()
        for label in labels:
            mapped = self.map_label(label, k)
            if mapped is not None:
                out.add(mapped)
        return out

    @property
    def n_wheels(self) -> int:
        return len(self.groupings)


_CACHE: dict[tuple, EmotionWheel] = {}
_CACHE_LOCK = threading.Lock()
