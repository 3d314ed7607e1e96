"""Label list -> positive / negative / neutral without an LLM: the ``rules`` path of sentiment scoring.

The reference asks Qwen2.5-7B-Instruct to map each label list of CMU-MOSI, CMU-MOSEI, SIMS and
SIMS v2 to a sentiment. The rules here make the same call from data, the same way every time.

One label's valence (+1, -1, 0, or none when nothing is known about it), first rule that applies:

1. **table**: the label itself is a ``label`` entry of ``scoring/valence.csv`` (common labels
   outside the wheels, such as "mixed" or "friendly", and labels whose wheel mapping misleads,
   such as "calm" or "fear"; each row says why).
2. **wheels**: the label maps onto the emotion wheels as the OV scorer maps it (`EmotionWheel.
   map_label`, wheels 1..5); each wheel's level-1 word casts its ``level1`` valence from the table;
   the sign of the sum is the label's valence (0 when the wheels disagree evenly).
3. **negation**: "not X", "no longer X", "never X", "without X", "lack of X", ...: X's valence
   flipped for a positive X ("not happy" is negative); a negated negative or neutral X is neutral
   ("not sad" says only that sadness is absent). The table overrides a few ("not bad", "not calm").
4. **hedges**: a leading "very", "slightly", "a bit", "feeling", ... is dropped and the rest
   decided ("slightly anxious" -> "anxious").
5. **words**: a longer label is reduced to the emotion words it holds (`scoring.parse.
   spot_emotions`), which are decided as a list (below).
6. Otherwise the label has no valence and casts no vote.

A list: labels are counted once each. The list is **positive** when more labels are positive
than negative, **negative** when more are negative; on a tie between them the **first** label
with a valence decides (AffectGPT names the leading emotion first); with no positive or negative
label (only neutral or unknown labels, e.g. ``[calm, surprised]``) or an **empty** list
(``[]``; the reference's prompt itself maps ``[]`` to neutral) it is **neutral**.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable

from core.errors import InputError, MissingFileError, WheelError
from scoring.wheel import EmotionWheel

VALENCE_FILE = "valence.csv"
VALENCES = {"positive": 1, "negative": -1, "neutral": 0}
WORDS = {1: "positive", -1: "negative", 0: "neutral"}
KINDS = ("level1", "label")

# Negators in front of a label; the longer alternatives first so that "not at all" beats "not".
_NEGATION = re.compile(
    r"^(?:not\s+at\s+all|not\s+(?:very|so|too|really|quite|particularly|entirely|fully|feeling)"
    r"|no\s+longer|not|never|hardly|barely|scarcely|without|lack\s+of|lacking(?:\s+in)?|"
    r"(?:is|was|are|were|does|do|did)(?:n't|\s+not)(?:\s+feel(?:ing)?)?|no)\s+(?P<rest>.+)$"
)
# Intensity and hedge words before a label; dropped one at a time.
_HEDGE = re.compile(
    r"^(?:very|really|extremely|quite|so|too|highly|deeply|truly|incredibly|utterly|totally|"
    r"slightly|somewhat|mildly|fairly|rather|a\s+little(?:\s+bit)?|a\s+bit(?:\s+of)?|"
    r"a\s+(?:touch|hint|trace|sense|feeling)\s+of|(?:hint|sense|feeling)\s+of|kind\s+of|"
    r"sort\s+of|more|mostly|partly|partially|generally|overall|some|mild|strong|great|full\s+of|"
    r"feeling|feels|felt|seems|seemingly|appears|looks|being|becoming|getting|a|an)\s+(?P<rest>.+)$"
)
_NEGATED = {1: -1, -1: 0, 0: 0}
_STRIP = " \t\r\n\"'`[](){}.,;:!?*"


def default_valence_table() -> Path:
    """The valence table shipped inside this package."""
    return Path(str(resources.files("scoring") / VALENCE_FILE))


@dataclass(frozen=True)
class ValenceTable:
    """``scoring/valence.csv``: a valence per wheel level-1 word (``level1``) and per label decided directly (``label``)."""

    path: Path
    level1: dict[str, int]
    labels: dict[str, int]
    why: dict[tuple[str, str], str] = field(repr=False)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "ValenceTable":
        """Read (once per file version) the table at ``path`` (default: the packaged one)."""
        path = Path(path) if path else default_valence_table()
        if not path.is_file():
            raise MissingFileError(f"valence table {path} does not exist")
        return _load_table(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_table(path: str, _mtime: int) -> ValenceTable:
    level1: dict[str, int] = {}
    labels: dict[str, int] = {}
    why: dict[tuple[str, str], str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("word", "valence", "kind", "why") if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"valence table {path}: missing column(s) {missing} (has {reader.fieldnames})")
        for row, rec in enumerate(reader, start=2):
            word = " ".join((rec["word"] or "").lower().split())
            valence, kind, reason = (rec["valence"] or "").strip(), (rec["kind"] or "").strip(), (rec["why"] or "").strip()
            if not word:
                raise InputError(f"valence table {path} row {row}: empty word")
            if valence not in VALENCES:
                raise InputError(f"valence table {path} row {row}: valence {valence!r} is not one of {list(VALENCES)}")
            if kind not in KINDS:
                raise InputError(f"valence table {path} row {row}: kind {kind!r} is not one of {list(KINDS)}")
            if not reason:
                raise InputError(f"valence table {path} row {row}: {word!r} has no 'why'")
            if (kind, word) in why:
                raise InputError(f"valence table {path} row {row}: {word!r} ({kind}) is listed twice")
            why[(kind, word)] = reason
            (level1 if kind == "level1" else labels)[word] = VALENCES[valence]
    return ValenceTable(Path(path), level1, labels, why)


@dataclass(frozen=True)
class LabelValence:
    """One label's valence (+1, -1, 0; None: unknown, no vote) and the rule that gave it."""

    label: str
    valence: int | None
    rule: str  # table, wheels, negated, words, unknown


@dataclass(frozen=True)
class SentimentDecision:
    """A list's sentiment word, the list rule that decided it, and each label's valence."""

    sentiment: str
    rule: str
    labels: tuple[LabelValence, ...]


def normalise(label: str) -> str:
    """Lower case, outer quotes/brackets/punctuation stripped, inner whitespace collapsed."""
    return " ".join(str(label).lower().replace("’", "'").strip(_STRIP).split())


class SentimentRules:
    """The rules above over one emotion wheel and one valence table."""

    def __init__(self, wheel: EmotionWheel, table: ValenceTable | None = None):
        self.wheel = wheel
        self.table = table or ValenceTable.load()
        self._memo: dict[str, LabelValence] = {}
        self._check_level1()

    def _check_level1(self) -> None:
        for k, grouping in enumerate(self.wheel.groupings, start=1):
            for word in sorted(set(grouping.values())):
                if word not in self.table.level1:
                    raise WheelError(
                        f"emotion wheel {self.wheel.root}: level-1 word {word!r} of wheel {k} has no "
                        f"valence in {self.table.path} (add a row: {word},<positive|negative|neutral>,level1,<why>)"
                    )

    def _wheel_valence(self, text: str) -> int | None:
        mapped = []
        for form in dict.fromkeys((text, text.replace("'", "’"))):
            if form not in self.wheel.form2bases:
                continue
            mapped = [self.wheel.map_label(form, k) for k in range(1, self.wheel.n_wheels + 1)]
            if any(mapped):
                break
        votes = [self.table.level1[m] for m in mapped if m is not None]
        if not votes:
            return None
        total = sum(votes)
        return (total > 0) - (total < 0)

    def valence(self, label: str) -> LabelValence:
        """One label's valence by the first rule that applies (table, wheels, negation, hedges, words)."""
        text = normalise(label)
        found = self._memo.get(text)
        if found is None:
            found = self._valence(text)
            self._memo[text] = found
        return found

    def _valence(self, text: str) -> LabelValence:
        if not text:
            return LabelValence(text, None, "unknown")
        if text in self.table.labels:
            return LabelValence(text, self.table.labels[text], "table")
        value = self._wheel_valence(text)
        if value is not None:
            return LabelValence(text, value, "wheels")
        m = _NEGATION.match(text)
        if m:
            inner = self.valence(m.group("rest"))
            if inner.valence is not None:
                return LabelValence(text, _NEGATED[inner.valence], "negated")
        m = _HEDGE.match(text)
        if m:
            inner = self.valence(m.group("rest"))
            if inner.valence is not None:
                return LabelValence(text, inner.valence, inner.rule)
        if " " in text:
            from scoring.parse import spot_emotions

            words = [w for w in spot_emotions(text, self.wheel) if normalise(w) != text]
            if words:
                decided = self.decide(words)
                if decided.rule not in ("empty list", "no label with a valence"):
                    return LabelValence(text, VALENCES[decided.sentiment], "words")
                return LabelValence(text, 0 if any(v.valence == 0 for v in decided.labels) else None, "words")
        return LabelValence(text, None, "unknown")

    def decide(self, labels: Iterable[str]) -> SentimentDecision:
        """The list's sentiment: majority of positive vs negative labels, a tie to the first, else neutral."""
        items: list[LabelValence] = []
        seen: set[str] = set()
        for label in labels:
            item = self.valence(label)
            if item.label and item.label not in seen:
                seen.add(item.label)
                items.append(item)
        if not items:
            return SentimentDecision("neutral", "empty list", ())
        pos = sum(1 for v in items if v.valence == 1)
        neg = sum(1 for v in items if v.valence == -1)
        if pos == neg == 0:
            return SentimentDecision("neutral", "no label with a valence", tuple(items))
        if pos != neg:
            word = "positive" if pos > neg else "negative"
            return SentimentDecision(word, f"majority: {pos} positive, {neg} negative", tuple(items))
        first = next(v for v in items if v.valence in (1, -1))
        return SentimentDecision(WORDS[first.valence], f"tie {pos}:{neg}: the first ({first.label}) decides",
                                 tuple(items))
