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

A list by the rules alone (`SentimentRules.decide`): labels are counted once each. The list is
**positive** when more labels are positive than negative, **negative** when more are negative; on
a tie between them the **last** label with a valence decides (on the 429 tied rows of the
calibration data below the reference LLM sided with the last polar label 257 times, with the
first 65 times, and said neither 107 times); with no positive or negative label (only neutral or
unknown labels, e.g. ``[calm, surprised]``) or an **empty** list (``[]``; the reference's prompt
itself maps ``[]`` to neutral) it is **neutral**.

The mapping that scores (`SentimentMapping`, ``score.sentiment=rules``) is calibrated on what the
reference scorer's LLM answered for the released model's own label lists
(``scoring/calibration/sentiment/``, see its SOURCE.md):

1. **calibration**: a list seen there gets the reference's own answer for it (the LLM gives the
   same answer to the same list 99.9 % of the time).
2. **weights**: otherwise a stacked score in two stages, both L2-regularised logistic regressions
   fitted by `calibrate` on the calibration lists:

   - stage 1 gives each label a **score**, the sum of small learned weights of what is known about
     it: the label itself, its wheel base form, its level-1 word on each wheel, its valence by the
     rules above, and its VADER lexicon valence (``scoring/lexicon/``, MIT). The weights are those
     of a regression of positive-vs-not on each list's label features summed with a position weight
     ``1 + i/(n-1)`` for the i-th of n labels (the last twice the first: the reference LLM's recency).
   - stage 2 reads eight summaries of a list's label scores c_1..c_n (`summarise`): their sum,
     their ramped sum (c_i times (i-1)/(n-1)), the largest, the smallest, the last, the mean, and
     the sums of the positive and of the negative scores; a second regression over them decides:
     **positive** when its score is above 0. It is fitted on label
     scores a stage 1 gave without seeing the row's list (out of fold, ``STACK_FOLDS`` folds by
     list), the situation it meets in use, so it learns how far to trust a new list's scores and
     how one strongly negative or one late label sways the reference LLM (a sum alone cannot).
   - not positive: **negative** when a regression of negative-vs-not on the position-weighted
     features is above 0, else **neutral**.

   Each distinct list counts once per answer it got (the lookup answers repeated lists; the
   weights serve lists never seen). Stage 1's C (the L2 strength, also the negative regression's)
   is chosen from ``REGULARISATION_GRID`` by an inner cross-validation on the calibration rows alone
   (``SELECTION_FOLDS`` folds by list): the candidate whose stacked score has the lowest log loss on
   the held-out lists' rows wins (log loss, not accuracy: over a few thousand rows accuracy moves by
   single rows and its choice flips with the folds). Both kinds of folds are drawn at random with a
   fixed seed (sklearn's ``GroupKFold`` unshuffled deals the sorted lists out in turn, so near
   twins that sort side by side, ``[happy, excited]`` and ``[happy, excited, proud]``, land in
   different folds and held-out scores look better than a new list's). The weights,
   fitted on both sets, ship in ``scoring/sentiment_weights.json`` with the choice, each
   candidate's held-out loss and the agreement the mapping reached when calibrated on one set alone
   and measured on the other (`cross_set_agreement`, ``bench/sentiment_agreement.py``). A row's
   reason names the three labels with the largest scores and the summaries stage 2 read.
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
    """``scoring/valence.csv``: a valence per wheel level-1 word (``level1``) and per label decided directly
    (``label``)."""

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
            valence, kind = (rec["valence"] or "").strip(), (rec["kind"] or "").strip()
            reason = (rec["why"] or "").strip()
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
    # "positive_emotions" and "lack_of_interest" are written with underscores now and then.
    return " ".join(str(label).lower().replace("’", "'").replace("_", " ").strip(_STRIP).split())


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
        """The list's sentiment: majority of positive vs negative labels, a tie to the last, else neutral."""
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
        last = next(v for v in reversed(items) if v.valence in (1, -1))
        return SentimentDecision(WORDS[last.valence], f"tie {pos}:{neg}: the last ({last.label}) decides",
                                 tuple(items))


# ---------------------------------------------------------------- the calibrated mapping

WEIGHTS_FILE = "sentiment_weights.json"
LEXICON_FILE = "lexicon/vader.csv"
CALIBRATION_DIR = "calibration/sentiment"
# The packaged calibration sets: MER-UniBench dataset name -> file under CALIBRATION_DIR.
CALIBRATION_SETS = {"CMUMOSI": "cmumosi.csv", "SIMS": "sims.csv"}
CALIBRATION_COLUMNS = ("dataset", "checkpoint", "name", "openset", "llm_sentiment")
INTERCEPT = "(intercept)"
# The scale of the shared label features: a larger scale is a weaker L2 penalty, so the valence by
# the rules (x3) carries a word the calibration never saw, and the five wheel words (x0.5 each) weigh
# about as much as the label itself.
VALENCE_SCALE = 3.0
WHEEL_SCALE = 0.5
# Stage 1's L2 strengths (sklearn's C) that `calibrate` chooses among by an inner cross-validation
# of SELECTION_FOLDS folds over the calibration lists; the out-of-fold folds that give stage 2 its
# training scores; stage 2's own C.
REGULARISATION_GRID = (0.1, 0.2, 0.3, 0.5, 1.0)
SELECTION_FOLDS = 3
STACK_FOLDS = 5
STAGE2_C = 1.0
# What stage 2 reads of a list's label scores (`summarise`).
SUMMARIES = ("sum", "ramped", "max", "min", "last", "mean", "positive_sum", "negative_sum")


def _package_file(name: str) -> Path:
    return Path(str(resources.files("scoring") / name))


def default_weights_path() -> Path:
    """The calibrated weights shipped inside this package (``scoring/sentiment_weights.json``)."""
    return _package_file(WEIGHTS_FILE)


@dataclass(frozen=True)
class CalibrationRow:
    """One released label list and what the reference scorer's LLM answered for it."""

    dataset: str
    checkpoint: str
    name: str
    openset: str
    llm_sentiment: str

    @property
    def answer(self) -> str:
        """The answer as the reference metric reads it: anything but positive/negative is neutral."""
        return reference_word(self.llm_sentiment)


def reference_word(answer: str) -> str:
    """positive / negative as given, anything else neutral (how the reference scorer reads the LLM's
    answer: AffectGPT ``evaluation.py`` ``calculate_dimension_zeroshot``, lines 174-183)."""
    word = str(answer).strip().lower()
    return word if word in ("positive", "negative") else "neutral"


def read_calibration(path: str | Path) -> list[CalibrationRow]:
    """The rows of one calibration CSV (columns ``CALIBRATION_COLUMNS``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"sentiment calibration file {path} does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CALIBRATION_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"sentiment calibration file {path}: missing column(s) {missing} "
                             f"(has {reader.fieldnames})")
        rows = []
        for row, rec in enumerate(reader, start=2):
            if not (rec["llm_sentiment"] or "").strip():
                raise InputError(f"sentiment calibration file {path} row {row}: empty llm_sentiment")
            rows.append(CalibrationRow(*(rec[c] or "" for c in CALIBRATION_COLUMNS)))
    return rows


def packaged_calibration() -> dict[str, list[CalibrationRow]]:
    """The calibration sets shipped in ``scoring/calibration/sentiment/``, by dataset name."""
    return {ds: read_calibration(_package_file(f"{CALIBRATION_DIR}/{f}")) for ds, f in CALIBRATION_SETS.items()}


@functools.lru_cache(maxsize=4)
def read_lexicon(path: str | None = None) -> dict[str, float]:
    """Word -> mean valence (-4..4) of the packaged VADER lexicon (or the CSV ``word,valence`` at ``path``)."""
    path = Path(path) if path else _package_file(LEXICON_FILE)
    if not path.is_file():
        raise MissingFileError(f"valence lexicon {path} does not exist")
    out: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row, rec in enumerate(csv.DictReader(fh), start=2):
            try:
                out[rec["word"].strip().lower()] = float(rec["valence"])
            except (KeyError, TypeError, ValueError, AttributeError):
                raise InputError(f"valence lexicon {path} row {row}: expected word,valence, got {rec}") from None
    return out


def list_key(labels: Iterable[str]) -> tuple[str, ...]:
    """A list as the calibration lookup matches it: its labels normalised, in order."""
    return tuple(t for t in (normalise(x) for x in labels) if t)


def reference_answers(rows: Iterable[CalibrationRow]) -> dict[tuple[str, ...], tuple[str, int]]:
    """List key -> (the reference's most frequent answer for it, how many rows gave that list)."""
    from features.labels import parse_openset

    seen: dict[tuple[str, ...], dict[str, int]] = {}
    for r in rows:
        counts = seen.setdefault(list_key(parse_openset(r.openset)), {})
        counts[r.answer] = counts.get(r.answer, 0) + 1
    # Most frequent answer; a tie (3 lists of 8,001 rows) goes to the alphabetically first word.
    return {k: (min(c, key=lambda w: (-c[w], w)), sum(c.values())) for k, c in seen.items() if k}


def summarise(scores: list[float]) -> dict[str, float]:
    """What stage 2 reads of a list's label scores c_1..c_n, in list order: their sum, their
    ramped sum (c_i times (i-1)/(n-1), 1 for a single label: later labels count more), the
    largest, the smallest, the last, the mean, and the sums of the positive and of the negative
    scores."""
    n = len(scores)
    total = float(sum(scores))
    ramped = float(sum(c * (i / (n - 1) if n > 1 else 1.0) for i, c in enumerate(scores)))
    return {"sum": total, "ramped": ramped, "max": float(max(scores)), "min": float(min(scores)),
            "last": float(scores[-1]), "mean": total / n, "positive_sum": float(sum(c for c in scores if c > 0)),
            "negative_sum": float(sum(c for c in scores if c < 0))}


@dataclass(frozen=True)
class SentimentWeights:
    """Stage 1's positive weights and the negative regression's weights by feature name, stage 2's
    coefficient per summary (``SUMMARIES`` and the intercept), the sets they were fitted on, how
    stage 1's regularisation was chosen (``selection``) and, when measured, the agreement reached
    on the other set (``{"A->B": {...}}``)."""

    positive: dict[str, float]
    negative: dict[str, float]
    calibrated_on: tuple[str, ...]
    agreement: dict = field(default_factory=dict)
    stage2: dict[str, float] = field(default_factory=dict)
    selection: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "SentimentWeights":
        """Read the weights at ``path`` (default: the packaged ``scoring/sentiment_weights.json``)."""
        import json

        path = Path(path) if path else default_weights_path()
        if not path.is_file():
            raise MissingFileError(f"sentiment weights {path} do not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            weights = data["weights"]
            stage2 = {str(k): float(v) for k, v in data["stage2"].items()}
            unknown = sorted(set(stage2) - {*SUMMARIES, INTERCEPT})
            if unknown:
                raise ValueError(f"stage2 names {unknown} are not among {[*SUMMARIES, INTERCEPT]}")
            return cls({f: float(w[0]) for f, w in weights.items()}, {f: float(w[1]) for f, w in weights.items()},
                       tuple(data["calibrated_on"]), data.get("agreement", {}), stage2, data.get("selection", {}))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise InputError(f"sentiment weights {path}: expected {{'calibrated_on', 'agreement', 'selection', "
                             f"'stage2': {{summary: coefficient}}, 'weights': {{feature: [positive, negative]}}}}: "
                             f"{exc!r}") from None

    def save(self, path: str | Path) -> Path:
        """Write as JSON, one feature a line, sorted (diffs show what a recalibration moved)."""
        import json

        path = Path(path)
        names = sorted(set(self.positive) | set(self.negative))
        lines = [f"  {json.dumps(n)}: [{self.positive.get(n, 0.0)}, {self.negative.get(n, 0.0)}]" for n in names]
        head = {"method": "positive: label scores by stage-1 weights, stage 2 over their summaries; "
                          "negative: one regression (scoring.sentiment)",
                "calibrated_on": list(self.calibrated_on), "agreement": self.agreement,
                "selection": self.selection, "stage2": self.stage2}
        text = json.dumps(head, indent=1, sort_keys=True)[:-2] + ',\n "weights": {\n' + ",\n".join(lines) + "\n }\n}\n"
        path.write_text(text, encoding="utf-8")
        return path


class SentimentMapping:
    """Label list -> sentiment as calibrated on the reference's answers (the module docstring)."""

    def __init__(self, wheel: EmotionWheel, weights: SentimentWeights | None = None,
                 answers: dict[tuple[str, ...], tuple[str, int]] | None = None, *,
                 table: ValenceTable | None = None, lexicon: dict[str, float] | None = None):
        """``weights`` default to the packaged ones and ``answers`` to the packaged calibration
        sets' (pass ``{}`` for the weights alone)."""
        self.rules = SentimentRules(wheel, table)
        self.weights = weights or _packaged_weights()
        self.answers = _packaged_answers() if answers is None else answers
        self.lexicon = read_lexicon() if lexicon is None else lexicon
        self._memo: dict[str, dict[str, float]] = {}

    def label_features(self, item: LabelValence) -> dict[str, float]:
        """What is known about one label, as weighted features (before its position weight)."""
        found = self._memo.get(item.label)
        if found is not None:
            return found
        text, wheel = item.label, self.rules.wheel
        feats = {f"label:{text}": 1.0,
                 f"valence:{WORDS.get(item.valence, 'unknown') if item.valence is not None else 'unknown'}":
                     VALENCE_SCALE}
        bases = wheel.form2bases.get(text)
        if bases:
            feats[f"base:{bases[0]}"] = 1.0
            for k in range(1, wheel.n_wheels + 1):
                level1 = wheel.map_label(text, k)
                if level1:
                    feats[f"wheel{k}:{level1}"] = WHEEL_SCALE
        # A lexicon knows single words: "not happy" would read as happy.
        value = None if item.rule == "negated" or _NEGATION.match(text) else self._lexicon_valence(text, bases or [])
        if value is None:
            feats["lexicon:none"] = 1.0
        else:
            feats["lexicon"] = value
        self._memo[text] = feats
        return feats

    def _lexicon_valence(self, text: str, bases: list[str]) -> float | None:
        for word in [text, *bases]:
            if word in self.lexicon:
                return self.lexicon[word]
        words = [self.lexicon[w] for w in re.split(r"[\s\-]+", text) if w in self.lexicon]
        return sum(words) / len(words) if words else None

    def items(self, labels: Iterable[str]) -> list[LabelValence]:
        """The list's labels as the rules read them, each once, in order."""
        items: list[LabelValence] = []
        seen: set[str] = set()
        for label in labels:
            item = self.rules.valence(label)
            if item.label and item.label not in seen:
                seen.add(item.label)
                items.append(item)
        return items

    def features(self, items: list[LabelValence]) -> list[tuple[float, dict[str, float]]]:
        """Each label's position weight (1 for the first, 2 for the last) and its features."""
        n = len(items)
        return [(1.0 + (i / (n - 1) if n > 1 else 1.0), self.label_features(v)) for i, v in enumerate(items)]

    def label_score(self, item: LabelValence) -> float:
        """One label's stage-1 score: its features times the positive weights (no position weight)."""
        weights = self.weights.positive
        return sum(weights.get(f, 0.0) * x for f, x in self.label_features(item).items())

    def positive_score(self, items: list[LabelValence]) -> tuple[float, list[float], dict[str, float]]:
        """Stage 2's score over the labels' stage-1 scores (above 0: positive), the label scores and
        their summaries."""
        scores = [self.label_score(v) for v in items]
        summary = summarise(scores)
        stage2 = self.weights.stage2
        return stage2.get(INTERCEPT, 0.0) + sum(stage2.get(k, 0.0) * x for k, x in summary.items()), scores, summary

    def decide(self, labels: Iterable[str]) -> SentimentDecision:
        """The list's sentiment: the reference's own answer for a calibration list, else the weights."""
        labels = list(labels)
        items = self.items(labels)
        if not items:
            return SentimentDecision("neutral", "empty list", ())
        known = self.answers.get(list_key(labels))
        if known is not None:
            return SentimentDecision(known[0], f"calibration: the reference's answer for this list "
                                               f"({known[1]} row{'s' if known[1] > 1 else ''})", tuple(items))
        pos = self.positive_score(items)
        if pos[0] > 0:
            return SentimentDecision("positive", self._why(pos, items), tuple(items))
        parts = [w * sum(self.weights.negative.get(f, 0.0) * x for f, x in fx.items())
                 for w, fx in self.features(items)]
        neg = (self.weights.negative.get(INTERCEPT, 0.0) + sum(parts), parts)
        word = "negative" if neg[0] > 0 else "neutral"
        return SentimentDecision(word, self._why(pos, items, neg), tuple(items))

    @staticmethod
    def _why(pos, items, neg=None) -> str:
        def top(parts):
            ranked = sorted(zip(parts, items), key=lambda p: -abs(p[0]))[:3]
            return ", ".join(f"{v.label} {c:+.2f}" for c, v in ranked)

        summary = ", ".join(f"{k} {x:+.2f}" for k, x in pos[2].items())
        text = f"weights: positive score {pos[0]:+.2f} (label scores {top(pos[1])}; {summary})"
        if neg is not None:
            text += f"; negative score {neg[0]:+.2f} ({top(neg[1])})"
        return text


@functools.lru_cache(maxsize=1)
def _packaged_weights() -> SentimentWeights:
    return SentimentWeights.load()


@functools.lru_cache(maxsize=1)
def _packaged_answers() -> dict[tuple[str, ...], tuple[str, int]]:
    return reference_answers(r for rows in packaged_calibration().values() for r in rows)


def agreement_note() -> str:
    """What ``score.sentiment=rules`` is and how far it agrees with the reference's LLM, as measured
    cross-set when the packaged weights were made (for reports)."""
    rates = sorted(r["with_calibration_answers"]["positive_vs_not"] for r in _packaged_weights().agreement.values())
    low, high = (f"{100 * rates[0]:.2f}", f"{100 * rates[-1]:.2f}") if rates else ("", "")
    span = low if low == high else f"{low}–{high}"
    measured = (f"; it gives the reference LLM's positive-or-not on {span} % "
                "of released outputs it was not calibrated on" if rates else "")
    return ("score.sentiment=rules, no LLM: calibrated on the reference LLM's answers, an approximation of the "
            f"reference's way, score.sentiment=llm{measured}")


def calibrate(sets: dict[str, list[CalibrationRow]], wheel: EmotionWheel, *,
              table: ValenceTable | None = None, lexicon: dict[str, float] | None = None,
              regularisation: float | None = None) -> SentimentWeights:
    """Fit the mapping on ``sets`` (dataset -> rows); deterministic. Each distinct label list
    (as `SentimentMapping.items` reads it) counts once per answer the reference gave it. Stage 1's
    C is chosen from ``REGULARISATION_GRID`` by the inner cross-validation on these rows alone
    (``regularisation`` fixes it instead); the choice and each candidate's held-out log loss are
    kept in ``selection``."""
    import numpy as np
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    from features.labels import parse_openset

    mapping = SentimentMapping(wheel, SentimentWeights({}, {}, ()), {}, table=table, lexicon=lexicon)
    # An empty list is neutral by rule (the reference prompt's own example), not by the weights.
    counts: dict[tuple[tuple[str, ...], str], int] = {}
    by_labels: dict[tuple[str, ...], list[LabelValence]] = {}
    for name in sorted(sets):
        for r in sets[name]:
            items = mapping.items(parse_openset(r.openset))
            if items:
                key = tuple(v.label for v in items)
                by_labels.setdefault(key, items)
                counts[(key, r.answer)] = counts.get((key, r.answer), 0) + 1
    entries = sorted(counts)
    answers = np.array([a for _, a in entries])
    n_lists = len(by_labels)
    if n_lists < SELECTION_FOLDS * STACK_FOLDS or not {"positive", "negative"} <= set(answers):
        raise InputError(f"sentiment calibration: {n_lists} distinct label lists with answers "
                         f"{sorted(map(str, set(answers)))}; needs at least {SELECTION_FOLDS * STACK_FOLDS} lists "
                         "and both positive and negative answers")
    # Each distinct label's features (one row each), and each list as its labels' position weights.
    label_ids: dict[str, int] = {}
    for key in by_labels:
        for label in key:
            label_ids.setdefault(label, len(label_ids))
    vocab: dict[str, int] = {}
    data, cols, ptr = [], [], [0]
    items_of = {v.label: v for key in by_labels for v in by_labels[key]}
    for label in label_ids:
        fx = mapping.label_features(items_of[label])
        for f in sorted(fx):
            cols.append(vocab.setdefault(f, len(vocab)))
            data.append(fx[f])
        ptr.append(len(cols))
    label_x = sparse.csr_matrix((data, cols, ptr), shape=(len(label_ids), len(vocab)))
    lists = [np.array([label_ids[label] for label in key]) for key, _ in entries]
    data, cols, ptr = [], [], [0]
    for key, _ in entries:
        items = by_labels[key]
        for (w, _), v in zip(mapping.features(items), items):
            cols.append(label_ids[v.label])
            data.append(w)
        ptr.append(len(cols))
    x = sparse.csr_matrix((data, cols, ptr), shape=(len(entries), len(label_ids))) @ label_x
    group_ids: dict[tuple[str, ...], int] = {}
    groups = np.array([group_ids.setdefault(key, len(group_ids)) for key, _ in entries])
    weight = np.array([counts[e] for e in entries], dtype=float)
    positive = answers == "positive"

    if regularisation is None:
        losses = _inner_losses(x, label_x, lists, positive, groups, weight)
        regularisation = min(REGULARISATION_GRID, key=lambda c: (losses[c], REGULARISATION_GRID.index(c)))
        selection = {"C": regularisation, "inner_log_loss": {str(c): round(v, 5) for c, v in losses.items()}}
    else:
        selection = {"C": regularisation, "inner_log_loss": {}}
    selection.update(grid=list(REGULARISATION_GRID), inner_folds=SELECTION_FOLDS, stack_folds=STACK_FOLDS,
                     distinct_lists=n_lists, rows_with_labels=int(weight.sum()))
    coef, second = _fit_stack(x, label_x, lists, positive, groups, regularisation)
    names = sorted(vocab, key=vocab.get)
    fitted = {"positive": {n: round(float(c), 4) for n, c in zip(names, coef) if round(float(c), 4)}}
    model = LogisticRegression(C=regularisation, max_iter=10000).fit(x, answers == "negative")
    fitted["negative"] = {n: round(float(c), 4) for n, c in zip(names, model.coef_[0]) if round(float(c), 4)}
    fitted["negative"][INTERCEPT] = round(float(model.intercept_[0]), 4)
    stage2 = {k: round(float(c), 4) for k, c in zip(SUMMARIES, second.coef_[0])}
    stage2[INTERCEPT] = round(float(second.intercept_[0]), 4)
    return SentimentWeights(fitted["positive"], fitted["negative"], tuple(sorted(sets)), {}, stage2, selection)


def _summaries(label_scores, lists):
    import numpy as np

    return np.array([[summarise(label_scores[ids].tolist())[k] for k in SUMMARIES] for ids in lists])


def _fit_stack(x, label_x, lists, y, groups, c):
    """Stage 1 (positive vs not over the lists' position-weighted label features) on all rows, and
    stage 2 on summaries of label scores that a stage 1 fitted without the row's list gave
    (``STACK_FOLDS`` folds by list), so stage 2 learns how scores of unseen labels combine."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    z = np.zeros((len(lists), len(SUMMARIES)))
    for train, test in GroupKFold(STACK_FOLDS, shuffle=True, random_state=0).split(x, y, groups):
        coef = LogisticRegression(C=c, max_iter=10000).fit(x[train], y[train]).coef_[0]
        z[test] = _summaries(label_x @ coef, [lists[i] for i in test])
    coef = LogisticRegression(C=c, max_iter=10000).fit(x, y).coef_[0]
    return coef, LogisticRegression(C=STAGE2_C, max_iter=1000).fit(z, y)


def _inner_losses(x, label_x, lists, y, groups, weight) -> dict[float, float]:
    """Each candidate C's log loss on held-out lists (``SELECTION_FOLDS`` folds by list, every row
    of a held-out list counted): the mapping's own question, a list it has not seen."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GroupKFold

    losses = {}
    for c in REGULARISATION_GRID:
        total = 0.0
        for train, test in GroupKFold(SELECTION_FOLDS, shuffle=True, random_state=0).split(x, y, groups):
            coef, second = _fit_stack(x[train], label_x, [lists[i] for i in train], y[train], groups[train], c)
            p = second.predict_proba(_summaries(label_x @ coef, [lists[i] for i in test]))
            total += log_loss(y[test], p, sample_weight=weight[test], labels=second.classes_) * weight[test].sum()
        losses[c] = float(total / weight.sum())
    return losses


@dataclass(frozen=True)
class Agreement:
    """How often a mapping gave what the reference LLM gave: positive vs not (what the metric uses)
    and the three words, over ``rows`` rows."""

    rows: int
    positive: int
    three_class: int

    @property
    def positive_rate(self) -> float:
        return self.positive / self.rows if self.rows else 0.0

    @property
    def three_class_rate(self) -> float:
        return self.three_class / self.rows if self.rows else 0.0

    def as_dict(self) -> dict:
        return {"rows": self.rows, "positive_vs_not": round(self.positive_rate, 4),
                "three_class": round(self.three_class_rate, 4)}


def agreement(decide, rows: Iterable[CalibrationRow]) -> Agreement:
    """``decide(labels) -> SentimentDecision`` against the reference's answers for ``rows``."""
    from features.labels import parse_openset

    n = pos = three = 0
    for r in rows:
        word = decide(parse_openset(r.openset)).sentiment
        n += 1
        pos += (word == "positive") == (r.answer == "positive")
        three += word == r.answer
    return Agreement(n, pos, three)


def cross_set_agreement(sets: dict[str, list[CalibrationRow]], wheel: EmotionWheel, *, lookup: bool = True,
                        fitted: dict[str, SentimentWeights] | None = None) -> dict[str, Agreement]:
    """For each ordered pair of sets: calibrate on the first alone (weights, and with ``lookup`` its
    answers too) and measure on the second. Keys ``"A->B"``. ``fitted``: each set's weights when
    already calibrated on it alone (several measurements of one calibration)."""
    out = {}
    for a in sorted(sets):
        weights = fitted[a] if fitted is not None else calibrate({a: sets[a]}, wheel)
        mapping = SentimentMapping(wheel, weights, reference_answers(sets[a]) if lookup else {})
        for b in sorted(sets):
            if b != a:
                out[f"{a}->{b}"] = agreement(mapping.decide, sets[b])
    return out
