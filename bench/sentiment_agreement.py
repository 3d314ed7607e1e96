"""How often our sentiment mapping gives what the reference scorer's LLM gave, on outputs it was not calibrated on.

    python bench/sentiment_agreement.py            # print the table (under a minute on one core)
    python bench/sentiment_agreement.py --write    # also refit on both sets and rewrite the packaged weights

Data: ``scoring/calibration/sentiment/`` (the released AffectGPT's label lists on CMU-MOSI and
CH-SIMS and the reference Qwen2.5-7B's answer for each; see its SOURCE.md). Every figure is over all
rows of the measured set. "positive vs not" is the split the reference metric uses; "3-class"
compares the words (the LLM's rare "mixed" etc. read as neutral, as the reference scorer reads them).

Lines, all from this one run and the same rows:
- rules alone (`SentimentRules.decide`, no calibration): measured on each set whole;
- cross-set, weights alone: calibrated on one set, measured on the other;
- cross-set, weights + the calibration set's own answers (what ships, fitted on one set only);
then the C each calibration chose by its inner cross-validation (with each candidate's held-out
log loss) and the disagreement kinds of the last line, with counts.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter

from features.labels import parse_openset
from scoring.sentiment import (
    SentimentMapping,
    SentimentRules,
    agreement,
    calibrate,
    cross_set_agreement,
    default_weights_path,
    packaged_calibration,
    reference_answers,
)
from scoring.wheel import EmotionWheel


def kind(decision) -> str:
    """The kind of list a decision was about: where the mapping can differ from the reference."""
    if decision.rule.startswith("calibration"):
        return "list seen in calibration"
    signs = {v.valence for v in decision.labels}
    if 1 in signs and -1 in signs:
        return "positive and negative labels"
    if 1 in signs:
        return "positive labels only"
    if -1 in signs:
        return "negative labels only"
    return "no positive or negative label"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true",
                        help="refit on both sets and rewrite scoring/sentiment_weights.json with these figures")
    args = parser.parse_args(argv)
    wheel = EmotionWheel.load(None)
    sets = packaged_calibration()
    rows = {name: len(r) for name, r in sets.items()}
    print(f"reference answers: {', '.join(f'{n} {c:,} rows' for n, c in rows.items())}")
    print(f"{'mapping':58s} {'measured on':>12s} {'pos vs not':>11s} {'3-class':>8s}")
    rules = SentimentRules(wheel)
    for name, set_rows in sets.items():
        a = agreement(rules.decide, set_rows)
        print(f"{'rules alone (no calibration)':58s} {name:>12s} {100 * a.positive_rate:10.2f}% "
              f"{100 * a.three_class_rate:7.2f}%")
    fitted = {a: calibrate({a: sets[a]}, wheel) for a in sorted(sets)}  # each set once, for every line below
    weights_only = cross_set_agreement(sets, wheel, lookup=False, fitted=fitted)
    shipped = cross_set_agreement(sets, wheel, lookup=True, fitted=fitted)
    for label, result in (("weights alone, calibrated on", weights_only),
                          ("weights + calibration answers, calibrated on", shipped)):
        for pair, a in result.items():
            src, dst = pair.split("->")
            print(f"{label + ' ' + src:58s} {dst:>12s} {100 * a.positive_rate:10.2f}% "
                  f"{100 * a.three_class_rate:7.2f}%")

    print("\nstage 1's C, chosen by the inner cross-validation on the calibration set alone:")
    for a_name, w in fitted.items():
        losses = ", ".join(f"{c} {v:.5f}" for c, v in w.selection["inner_log_loss"].items())
        print(f"  {a_name}: C {w.selection['C']} (held-out log loss by C: {losses})")

    print("\ndisagreements on positive vs not, weights + calibration answers, cross-set:")
    for a_name in sorted(sets):
        mapping = SentimentMapping(wheel, fitted[a_name], reference_answers(sets[a_name]))
        for b_name in sorted(set(sets) - {a_name}):
            kinds: Counter = Counter()
            for r in sets[b_name]:
                d = mapping.decide(parse_openset(r.openset))
                if (d.sentiment == "positive") != (r.answer == "positive"):
                    said = "we say positive, reference not" if d.sentiment == "positive" else \
                        "reference positive, we not"
                    kinds[(kind(d), said)] += 1
            print(f"  {a_name} -> {b_name}: {sum(kinds.values())} of {len(sets[b_name])} rows")
            for (k, said), n in sorted(kinds.items(), key=lambda kv: -kv[1]):
                print(f"    {n:4d}  {k}; {said}")

    if args.write:
        record = {pair: {"weights_alone": weights_only[pair].as_dict(), "with_calibration_answers": a.as_dict(),
                         "chosen_C": fitted[pair.split("->")[0]].selection["C"]}
                  for pair, a in shipped.items()}
        path = dataclasses.replace(calibrate(sets, wheel), agreement=record).save(default_weights_path())
        print(f"\nwrote {path} (calibrated on {', '.join(sorted(sets))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
