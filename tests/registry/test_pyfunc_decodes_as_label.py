"""A model served through ``mlflow.pyfunc`` answers as ``affectflow label`` does: same decoding settings
(each task's own budget, the released sampling when asked), same seeds, same text."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from core.config import load_config
from features.store import FeatureStore
from inference.labeling import label
from inference.table import read_table
from registry.pyfunc import AffectGPTPyfunc, signature
from registry.resolve import BASE_ARTIFACT, CKPT_ARTIFACT
from modeling.checkpoint import read_spec


@pytest.mark.parametrize("decoding", ["greedy", "released"])
def test_served_model_gives_label_s_text(ray_session, small_store, tiny_checkpoint, tmp_path, decoding):
    cfg = load_config(None, ["ray.num_cpus=2", f"label.decoding={decoding}", "seed=7"])
    out = tmp_path / "labels.parquet"
    summary = label(small_store, str(tiny_checkpoint), "ov,sentiment", out, batch_size=2, seed=7, cfg=cfg)
    assert summary.failed == 0
    table = read_table(out).to_pandas().sort_values(["name", "task"]).reset_index(drop=True)

    saved = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(saved, python_model=AffectGPTPyfunc(), signature=signature(),
                             artifacts={CKPT_ARTIFACT: str(tiny_checkpoint),
                                        BASE_ARTIFACT: read_spec(tiny_checkpoint)["llm_path"]})
    served = mlflow.pyfunc.load_model(str(saved))
    fs = FeatureStore(str(small_store))
    feats = fs.read(["face", "audio"], dtype="float32")
    subs = fs.samples(["subtitle"]).set_index("name")["subtitle"]
    rows = [(i, n, t) for i, n in enumerate(feats["name"]) for t in ("ov", "sentiment")]
    df = pd.DataFrame({"name": [n for _, n, _ in rows], "task": [t for _, _, t in rows],
                       "visual": [feats["face"][i] for i, _, _ in rows], "audio": [feats["audio"][i] for i, _, _ in rows],
                       "subtitle": [subs[n] for _, n, _ in rows]})
    got = served.predict(df, params={"decoding": decoding, "seed": 7})
    assert list(zip(df["name"], df["task"])) == list(zip(table["name"], table["task"]))
    assert list(got["text"]) == list(table["text"])
    assert table["text"].str.len().min() > 0
