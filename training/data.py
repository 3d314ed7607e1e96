"""Training examples from stored features: task draw, tokenization, sharding order and collate.

Input is any map-style dataset whose items are the feature reader's dicts
(``name, visual [8,Dv], audio [8,Da], subtitle, openset, reason``). We shard with a seeded,
per-epoch permutation split across ranks (what ``DistributedSampler`` does) rather than
Ray Data's ``get_dataset_shard``: the store is random-access, the order is then a pure
function of (seed, epoch, world size), and a resume can skip exactly the micro-batches
already consumed — a streaming shard cannot replay its order after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from modeling.prompt import QUESTIONS, draw_task, encode_example, task_answer

IGNORE_INDEX = -100


class PromptDataset(torch.utils.data.Dataset):
    """Wraps a feature dataset: item ``i`` of epoch ``e`` -> token ids, labels and features."""

    def __init__(self, features, tokenizer, *, seed: int, visual: str = "face", max_tokens: int = 1024,
                 description_prob: float = 0.5):
        self.features = features
        self.tokenizer = tokenizer
        self.seed = seed
        self.visual = visual
        self.max_tokens = max_tokens
        self.description_prob = description_prob
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        item = self.features[index]
        reason = item.get("reason")
        task = draw_task(self.seed, self.epoch, index, bool(reason), self.description_prob)
        answer = task_answer(task, item.get("openset"), reason)
        input_ids, labels = encode_example(
            self.tokenizer, item.get("subtitle") or "", QUESTIONS[task], answer, self.visual, self.max_tokens
        )
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "visual": torch.as_tensor(item["visual"], dtype=torch.float32),
            "audio": torch.as_tensor(item["audio"], dtype=torch.float32),
        }


@dataclass
class Collator:
    """Right-pads a list of examples; pad id = EOS, labels -100 on padding."""

    pad_id: int

    def __call__(self, batch: Sequence[dict]) -> dict:
        width = max(len(b["input_ids"]) for b in batch)
        n = len(batch)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            input_ids[i, :k] = b["input_ids"]
            labels[i, :k] = b["labels"]
            mask[i, :k] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": labels,
            "visual": torch.stack([b["visual"] for b in batch]),
            "audio": torch.stack([b["audio"] for b in batch]),
        }


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """Rank ``rank``'s sample indices for ``epoch``: DistributedSampler's order with drop_last."""
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    usable = n - n % world
    return perm[:usable][rank::world]


def store_labels(store: str):
    """The labels preprocessing stored in ``store`` (``features.reader.stored_labels``); a store
    written without them is a StoreError that says how to supply them."""
    from core.errors import StoreError
    from features.reader import stored_labels

    table, without = stored_labels(store)
    fix = ("pass --corpus ROOT (the corpus root with the track2/track3 label CSVs); re-running "
           "preprocess skips the samples already stored, so it would not add their labels")
    if without and table.empty:
        raise StoreError(f"feature store {store!r} holds no labels (it was written before preprocessing "
                         f"stored them): {fix}")
    if without:
        raise StoreError(f"{len(without)} samples of feature store {store!r} were stored without labels "
                         f"(e.g. {without[0]!r}; written before preprocessing stored them): {fix}")
    return table


def load_features(store: str, corpus: str | None, visual: str = "face", verdicts: str | None = None):
    """The store reader with its labels: those preprocessing stored, or the corpus' track2/track3 CSVs.

    ``corpus`` (a root holding the label CSVs) overrides the stored labels, and supplies them for a
    store written without them. ``verdicts`` (a review verdicts CSV, `features.labels.read_verdicts`)
    overrides both for the names it gives labels: human labels win. Only samples with a label list or
    a description are kept.
    """
    from core.errors import InputError
    from features.labels import override_labels, read_corpus_labels, read_verdicts
    from features.reader import FeatureDataset

    labels = read_corpus_labels(corpus) if corpus else store_labels(store)
    if verdicts:
        labels = override_labels(labels, read_verdicts(verdicts))
    data = FeatureDataset(store, labels=labels, visual=visual, require_labels=True)
    if len(data) == 0:
        where = (f"in {corpus!r}" if corpus
                 else "stored with it (the preprocessed corpus had no track2/track3 rows for them)")
        raise InputError(f"no stored sample of {store!r} has a label or a reason {where}"
                         + ("" if corpus else ": pass --corpus ROOT with the label CSVs"))
    return data
