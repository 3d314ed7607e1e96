"""Synthetic feature items and stores: what training would read from a preprocessed corpus, without the media.

`SyntheticFeatures` is an in-memory map-style dataset of feature-reader items whose emotion is
recoverable from both streams; `write_synthetic_store` writes them as a real Zarr feature store plus
the label CSVs, so tests and benches drive the store path end to end without decoding a video.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from features.labels import openset_to_store, reason_to_store
from features.spec import EncoderSpec
from features.store import FeatureStore


class SyntheticFeatures(torch.utils.data.Dataset):
    """In-memory feature items whose emotion is recoverable from both streams (tests, benches).

    Each class has a fixed random direction in the visual and the audio space; a sample is
    that direction plus noise, so a model can learn the class from the features alone (the
    subtitle says nothing about it).
    """

    EMOTIONS = ("happy", "sad", "angry", "worried", "surprise", "neutral")

    def __init__(self, n: int, visual_dim: int = 768, audio_dim: int = 64, seed: int = 0, noise: float = 0.3,
                 reason_every: int = 2, frames: int = 8):
        g = torch.Generator().manual_seed(seed)
        k = len(self.EMOTIONS)
        vis_dir = torch.randn(k, visual_dim, generator=g)
        aud_dir = torch.randn(k, audio_dim, generator=g)
        self.items = []
        for i in range(n):
            c = i % k
            emo = self.EMOTIONS[c]
            self.items.append({
                "name": f"synth_{i:05d}",
                "visual": vis_dir[c] + noise * torch.randn(frames, visual_dim, generator=g),
                "audio": aud_dir[c] + noise * torch.randn(frames, audio_dim, generator=g),
                "subtitle": "What are you talking about? I never said that.",
                "openset": [] if emo == "neutral" else [emo],
                "reason": (f"In the text, the speaker is calm; the face and voice suggest {emo}."
                           if reason_every and i % reason_every == 0 else None),
                "label": emo,
            })

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]



def write_synthetic_store(features: SyntheticFeatures, store: str, corpus: str,
                          labels_in_store: bool = True) -> None:
    """Write ``features`` as a real feature store plus a corpus root holding only the label CSVs
    (track2 openset, track3 reason), so tests and benches can drive the store path end to end.

    ``labels_in_store``: store the labels with the samples too, as preprocessing does; off, the
    store is one written before preprocessing stored labels (training then needs the corpus).
    """
    items = features.items
    vis, aud = items[0]["visual"], items[0]["audio"]
    specs = [
        EncoderSpec("face", "synthetic", "0" * 8, "none", "none", int(vis.shape[-1]), int(vis.shape[0]),
                    dtype="float32"),
        EncoderSpec("audio", "synthetic", "1" * 8, "none", "none", int(aud.shape[-1]), int(aud.shape[0]),
                    dtype="float32"),
    ]
    batch = {
        "name": np.array([it["name"] for it in items]),
        "subtitle": np.array([it["subtitle"] for it in items]),
        "face": np.stack([np.asarray(it["visual"], np.float32) for it in items]),
        "audio": np.stack([np.asarray(it["audio"], np.float32) for it in items]),
    }
    if labels_in_store:
        batch["openset"] = np.array([openset_to_store(it["openset"]) for it in items], dtype=object)
        batch["reason"] = np.array([reason_to_store(it["reason"]) for it in items], dtype=object)
    FeatureStore(str(store)).write_part(specs, batch)
    root = Path(corpus)
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"name": [it["name"] for it in items],
                  "openset": ["[" + ", ".join(it["openset"]) + "]" for it in items]}
                 ).to_csv(root / "track2_train_mercaptionplus.csv", index=False)
    pd.DataFrame({"name": [it["name"] for it in items if it["reason"]],
                  "reason": [it["reason"] for it in items if it["reason"]]}
                 ).to_csv(root / "track3_train_mercaptionplus.csv", index=False)
