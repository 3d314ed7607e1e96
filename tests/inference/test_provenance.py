"""Every label table records its model and the exact decoding settings it was made with; a resume under other
settings is refused. The released decoding's values are literals from the release's code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.config import load_config
from core.errors import InputError
from inference.labeling import LabelRequest, label
from inference.table import read_provenance
from tests.fixtures.inference import STORE_NAMES as NAMES


def label_config(*overrides: str):
    return load_config(None, ["ray.num_cpus=2", "label.max_new_tokens=4", "label.batch_size=5", *overrides])


@pytest.fixture(scope="module")
def qwen_like_llm(tiny_models, tmp_path_factory) -> Path:
    """The tiny LLM folder with Qwen2.5-7B-Instruct's sampling in its generation_config.json (top_k 20,
    repetition_penalty 1.05, temperature 0.7, top_p 0.8, do_sample true)."""
    llm = tmp_path_factory.mktemp("qwen_like") / "llm"
    shutil.copytree(tiny_models["llm"], llm)
    path = llm / "generation_config.json"
    gc = json.loads(path.read_text()) if path.is_file() else {}
    gc.update(top_k=20, repetition_penalty=1.05, temperature=0.7, top_p=0.8, do_sample=True)
    path.write_text(json.dumps(gc))
    return llm


def test_the_released_decoding_is_recorded_as_the_release_ran_it(ray_session, small_store, tiny_checkpoint,
                                                                  qwen_like_llm, tmp_path):
    """--decoding released on an LLM whose generation_config says top_k 20 and repetition_penalty 1.05: the table
    records top_k 20 (never passed by the release, so generation_config's) and repetition_penalty 1.0, temperature
    1 and top-p 0.9 (passed by Chat.answer_sample: my_affectgpt/conversation/conversation_video.py lines 200-201
    and 259-271, called by inference_hybird.py lines 262-264)."""
    out = tmp_path / "released.parquet"
    cfg = label_config("label.decoding=released", "seed=5")
    summary = label(LabelRequest(small_store, str(tiny_checkpoint), out, cfg, llm_path=qwen_like_llm))
    assert summary.ok == len(NAMES)
    got = read_provenance(out)
    assert got["decoding"] == {"decoding": "released", "do_sample": True, "temperature": 1.0, "top_p": 0.9,
                               "top_k": 20, "repetition_penalty": 1.0, "max_new_tokens": {"ov": 4},
                               "max_prompt_tokens": 800, "dtype": "fp32", "backend": "hf", "seed": 5}
    assert got["model"] == {"uri": str(tiny_checkpoint.resolve()), "version": "", "source_format": "affectflow",
                            "source_file": "", "source_sha256": ""}
    text = summary.format()
    assert text.count("top-k 20, repetition penalty 1)") == 1 and "dtype fp32; backend hf; seed 5" in text

    # The same settings resume (nothing to do, same bytes); other settings are refused before any work.
    before = out.read_bytes()
    again = label(LabelRequest(small_store, str(tiny_checkpoint), out, cfg, llm_path=qwen_like_llm))
    assert again.skipped == len(NAMES) and out.read_bytes() == before
    with pytest.raises(InputError, match=r"released\.parquet was labeled with other settings: decoding\.decoding "
                                         r"'released' \(this run: 'greedy'\); decoding\.do_sample True"):
        label(LabelRequest(small_store, str(tiny_checkpoint), out, label_config("seed=5", "label.task=both"),
                           llm_path=qwen_like_llm))
    assert out.read_bytes() == before


@pytest.mark.slow
def test_label_dtype_fp16_is_used_and_recorded(ray_session, small_store, tiny_checkpoint, tmp_path):
    """label.dtype=fp16 is what the job resolves, records and hands its actors; another task added later keeps
    one table (its budget joins the record)."""
    out = tmp_path / "fp16.parquet"
    assert label(LabelRequest(small_store, str(tiny_checkpoint), out, label_config("label.dtype=fp16"))).failed == 0
    assert read_provenance(out)["decoding"]["dtype"] == "fp16"
    label(LabelRequest(small_store, str(tiny_checkpoint), out,
                       label_config("label.dtype=fp16", "label.task=sentiment", "label.max_new_tokens=3")))
    assert read_provenance(out)["decoding"]["max_new_tokens"] == {"ov": 4, "sentiment": 3}


def test_the_label_actor_decodes_in_the_dtype_and_settings_it_is_given(tiny_checkpoint, one_thread):
    """The actor loads the model in the job's dtype (fp16: LLM fp16, fusion fp32 under autocast) and decodes with
    the job's resolved settings, not its own: its text is the fp16 model's with those settings."""
    from dataclasses import asdict

    import numpy as np
    import torch

    from inference.label_stage import LabelStage, StageSpec
    from modeling.generate import generate
    from modeling.prompt import question_for
    from modeling.sampling import GenerationConfig, sample_seed
    from registry.resolve import load_model, resolve_model

    gen = GenerationConfig(max_new_tokens=5, do_sample=True, top_k=7, repetition_penalty=1.3)
    stage = LabelStage(StageSpec(resolve_model(str(tiny_checkpoint)).to_dict(), [("ov", question_for("ov"))],
                                 asdict(gen), 9, "visual", device="cpu", dtype="fp16", torch_threads=None))
    assert (stage.model.llm.dtype, stage.model.fusion.multi_proj.weight.dtype) == (torch.float16, torch.float32)
    assert stage.config == gen
    g = np.random.default_rng(1)
    visual, audio = g.standard_normal((2, 8, 768), np.float32), g.standard_normal((2, 8, 64), np.float32)
    out = stage({"name": np.array(["a", "b"], object), "subtitle": np.array(["hi", ""], object), "visual": visual,
                 "audio": audio})
    direct, _ = load_model(str(tiny_checkpoint), device="cpu", dtype="fp16")
    want = generate(direct, torch.as_tensor(visual), torch.as_tensor(audio), ["hi", ""], ["ov", "ov"], gen,
                    [sample_seed(9, n, "ov") for n in ("a", "b")])
    assert list(out["text"]) == want


@pytest.mark.slow
def test_the_benchmark_labels_in_label_dtype(ray_session, tiny_checkpoint, models_dir, wheel_dir, tmp_path):
    """`benchmark` labels through the same job: its label table records label.dtype=fp16 and the released
    decoding's settings."""
    from inference.benchmark import BenchmarkRequest, benchmark
    from synth.unibench import write_unibench

    root = write_unibench(tmp_path / "unibench", 2, seed=0, datasets=["MER2023"]).root
    cfg = load_config(None, ["ray.num_cpus=2", "label.max_new_tokens=3", "label.batch_size=2", "label.dtype=fp16",
                             "label.decoding=released", f"score.wheel_dir={wheel_dir}", "score.extract=rules"])
    benchmark(BenchmarkRequest(str(tiny_checkpoint), root, tmp_path / "out", cfg, datasets=("MER2023",),
                               encoders=models_dir))
    (table,) = (tmp_path / "out" / "labels").glob("*.parquet")
    decoding = read_provenance(table)["decoding"]
    assert (decoding["dtype"], decoding["decoding"], decoding["repetition_penalty"]) == ("fp16", "released", 1.0)
