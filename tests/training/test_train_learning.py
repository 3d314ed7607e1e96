"""The tiny model learns: trained on features that encode the emotion, it answers the OV-label
question right on held-out samples far above chance (1/6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.config import load_config
from modeling.model import AffectGPT
from modeling.prompt import QUESTIONS, encode_example, ov_answer
from synth.features import SyntheticFeatures, write_synthetic_store
from training.data import load_features
from training.loop import LoopHooks, run_loop, single_process

pytestmark = pytest.mark.slow  # end-to-end jobs: `make test-slow` (CI runs both tiers)

N_TRAIN, N_HELD_OUT = 192, 48
N_CORPUS = 96


def predict(model: AffectGPT, item: dict, candidates: tuple[str, ...]) -> str:
    """The candidate whose OV answer the model finds most likely (lowest answer loss)."""
    scores = []
    for emotion in candidates:
        answer = ov_answer([] if emotion == "neutral" else [emotion])
        ids, labels = encode_example(model.tokenizer, item["subtitle"], QUESTIONS["ov"], answer)
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]),
                        visual=item["visual"][None], audio=item["audio"][None])
        scores.append(out.loss.item())
    return candidates[min(range(len(candidates)), key=scores.__getitem__)]


def test_tiny_model_learns_the_emotion_from_features(tiny_models, tmp_path):
    data = SyntheticFeatures(N_TRAIN + N_HELD_OUT, 768, 64, seed=0, noise=0.3)
    held_out = data.items[N_TRAIN:]
    data.items = data.items[:N_TRAIN]
    write_synthetic_store(data, str(tmp_path / "store.zarr"), str(tmp_path / "corpus"))
    cfg = load_config(None, ["train.global_batch_size=8", "train.micro_batch_size=8", "train.lr=3e-3",
                             "train.steps_per_epoch=120", "train.max_tokens=256"])
    with single_process():
        result = run_loop(cfg, load_features(str(tmp_path / "store.zarr"), str(tmp_path / "corpus")),
                          tiny_models["llm"], LoopHooks(checkpoint_root=str(tmp_path / "ckpt")))
    assert result.history[-1]["loss"] < result.history[0]["loss"]

    model = AffectGPT.load_trainable(result.last_checkpoint)
    correct = sum(predict(model, item, SyntheticFeatures.EMOTIONS) == item["label"] for item in held_out)
    accuracy = correct / len(held_out)
    assert accuracy >= 0.6, f"held-out OV accuracy {accuracy:.2f} (chance 0.17)"


@pytest.mark.slow  # about a minute on 2 cores
def test_tiny_model_learns_the_emotion_from_the_synthetic_corpus_store(tiny_models, ray_session, tmp_path):
    """End to end on real media: synthetic corpus -> preprocessing -> store -> training -> held-out OV answers."""
    from features.labels import read_corpus_labels
    from features.reader import FeatureDataset
    from pipelines.job import PreprocessRequest, preprocess
    from synth.corpus import EMOTIONS, MAIN_WORD, write_corpus

    models = Path(tiny_models["llm"]).parent
    write_corpus(tmp_path / "corpus", n=N_CORPUS, seed=0)
    preprocess(PreprocessRequest(tmp_path / "corpus", tmp_path / "store.zarr", load_config(), models=models))
    labels = read_corpus_labels(str(tmp_path / "corpus"))
    names = sorted(labels["name"])
    split = N_CORPUS * 3 // 4

    def subset(part):
        return FeatureDataset(str(tmp_path / "store.zarr"), labels=labels, names=part, require_labels=True)

    # OV task only: the check is about the labels, and descriptions would triple the step cost.
    cfg = load_config(None, ["train.global_batch_size=8", "train.micro_batch_size=8", "train.lr=3e-3",
                             "train.steps_per_epoch=200", "train.max_tokens=256", "train.description_prob=0"])
    with single_process():
        result = run_loop(
            cfg, subset(names[:split]), tiny_models["llm"], LoopHooks(checkpoint_root=str(tmp_path / "ckpt"))
        )
    model = AffectGPT.load_trainable(result.last_checkpoint)
    held_out = subset(names[split:])
    words = tuple(MAIN_WORD[e] for e in EMOTIONS)
    gold = [(item["openset"] or ["neutral"])[0] for item in held_out]
    correct = sum(predict(model, held_out[i], words) == gold[i] for i in range(len(held_out)))
    accuracy = correct / len(held_out)
    assert accuracy >= 0.45, f"held-out OV accuracy {accuracy:.2f} on the corpus store (chance 0.17)"
