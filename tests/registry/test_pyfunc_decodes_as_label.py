"""A model served through ``mlflow.pyfunc`` answers as ``affectflow label`` does: same decoding settings
(each task's own budget, the released sampling when asked), same seeds, same text. The model is the
session's briefly trained one: it ends its answers itself, as a real one does (an untrained model runs
every row to its whole budget, up to 1,200 tokens under the released sampling)."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from core.config import load_config
from features.store import FeatureStore
from inference.labeling import LabelRequest, label
from inference.table import read_table
from modeling.checkpoint import read_spec
from registry.pyfunc import AffectGPTPyfunc, signature
from registry.resolve import BASE_ARTIFACT, CKPT_ARTIFACT


@pytest.mark.slow
@pytest.mark.parametrize("decoding", ["greedy", "released"])
def test_served_model_gives_label_s_text(ray_session, small_store, trained_checkpoint, tmp_path, decoding):
    cfg = load_config(None, ["ray.num_cpus=2", f"label.decoding={decoding}", "seed=7", "label.task=ov,sentiment",
                             "label.batch_size=2"])
    out = tmp_path / "labels.parquet"
    summary = label(LabelRequest(small_store, str(trained_checkpoint), out, cfg))
    assert summary.failed == 0
    table = read_table(out).to_pandas().sort_values(["name", "task"]).reset_index(drop=True)

    saved = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(saved, python_model=AffectGPTPyfunc(), signature=signature(),
                             artifacts={CKPT_ARTIFACT: str(trained_checkpoint),
                                        BASE_ARTIFACT: read_spec(trained_checkpoint)["llm_path"]})
    served = mlflow.pyfunc.load_model(str(saved))
    fs = FeatureStore(str(small_store))
    feats = fs.read(["face", "audio"], dtype="float32")
    subs = fs.samples(["subtitle"]).set_index("name")["subtitle"]
    rows = [(i, n, t) for i, n in enumerate(feats["name"]) for t in ("ov", "sentiment")]
    df = pd.DataFrame(
        {
            "name": [n for _, n, _ in rows],
            "task": [t for _, _, t in rows],
            "visual": [feats["face"][i] for i, _, _ in rows],
            "audio": [feats["audio"][i] for i, _, _ in rows],
            "subtitle": [subs[n] for _, n, _ in rows],
        }
    )
    got = served.predict(df, params={"decoding": decoding, "seed": 7})
    assert list(zip(df["name"], df["task"])) == list(zip(table["name"], table["task"]))
    assert list(got["text"]) == list(table["text"])
    assert table["text"].str.len().min() > 0


def test_served_model_honours_label_dtype(tiny_checkpoint, tmp_path, one_thread):
    """The precision is label.dtype's: loaded as model_config says (default auto: fp32 on the CPU), and a request
    asking for fp16 gets the fp16 model (LLM fp16, fusion fp32 under autocast), whose text is load_model's."""
    import numpy as np
    import torch

    from modeling.generate import generate
    from modeling.sampling import DecodingSettings
    from registry.resolve import load_model

    saved = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(saved, python_model=AffectGPTPyfunc(), signature=signature(),
                             artifacts={CKPT_ARTIFACT: str(tiny_checkpoint),
                                        BASE_ARTIFACT: read_spec(tiny_checkpoint)["llm_path"]},
                             model_config={"dtype": "auto"})
    g = np.random.default_rng(0)
    df = pd.DataFrame({"name": ["a"], "task": ["ov"], "subtitle": ["I am fine."],
                       "visual": [g.standard_normal((8, 768)).astype(np.float32)],
                       "audio": [g.standard_normal((8, 64)).astype(np.float32)]})
    served = mlflow.pyfunc.load_model(str(saved))
    held = served.unwrap_python_model()
    assert held.model.llm.dtype == torch.float32
    got = served.predict(df, params={"dtype": "fp16", "max_new_tokens": 6})
    assert (held.model.llm.dtype, held.model.fusion.multi_proj.weight.dtype) == (torch.float16, torch.float32)
    direct, _ = load_model(str(tiny_checkpoint), device="cpu", dtype="fp16")
    cfg = DecodingSettings(max_new_tokens=6).resolve(direct.llm, "cpu")
    want = generate(direct, torch.as_tensor(df["visual"][0])[None], torch.as_tensor(df["audio"][0])[None],
                    ["I am fine."], ["ov"], cfg, [0])
    assert list(got["text"]) == want
    loaded16 = mlflow.pyfunc.load_model(str(saved), model_config={"dtype": "fp16"}).unwrap_python_model()
    assert loaded16.model.llm.dtype == torch.float16
