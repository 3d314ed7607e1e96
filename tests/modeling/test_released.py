"""Importing a released AffectGPT checkpoint: exact weights, the same computation, clear refusals.

The released-format files are written here: a seeded ``torch.save`` of ``{"model", "optimizer",
"config", "scaler", "epoch"}`` with the released key names, at the tiny model's shapes (the 7B key
set is checked on the meta device).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core.errors import InputError
from core.sections import ModelConfig
from modeling.released import DROPPED, ReleasedCheckpointError, import_released, to_released_name

VISUAL_DIM, AUDIO_DIM = 768, 64  # the tiny CLIP's projection and the tiny HuBERT's width
FACE_CONFIG = {"datasets": {"mercaptionplus": {"face_or_frame": "multiface_audio_face_text"}}}
MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


# config["model"] of the released face model as its train config writes it (train_configs/
# emercoarse_highlevelfilter4_outputhybird_bestsetup_bestfusion_lz.yaml lines 4-48; no lora_r: the release's
# default 16, my_affectgpt/models/affectgpt.py line 753), and its datasets section (lines 51-56).
RELEASED_MODEL_CONFIG = {
    "arch": "affectgpt", "model_type": "pretrain_vicuna", "frozen_video_proj": False, "frozen_video_Qformer": False,
    "frozen_audio_Qformer": False, "frozen_audio_proj": False, "frozen_multi_Qformer": False,
    "frozen_multi_llama_proj": False, "frozen_llm": False, "multi_fusion_type": "attention",
    "video_fusion_type": "attention", "audio_fusion_type": "attention", "image_fusion_type": "mean", "ckpt": "",
    "ckpt_2": "", "llama_model": "Qwen25", "acoustic_encoder": "HUBERT_LARGE", "visual_encoder": "CLIP_VIT_LARGE",
    "num_audio_query_token": 1, "num_video_query_token": 1, "num_multi_query_token": 1, "num_image_query_token": 1,
    "max_length": 1024,
}
RELEASED_CONFIG = {"model": RELEASED_MODEL_CONFIG,
                   "datasets": {"mercaptionplus": {"data_type": "video", "face_or_frame": "multiface_audio_face_text",
                                                   "label_type": "hybird"}}}


def released_state(llm: Path, seed: int = 7, lora_r: int = 16) -> dict[str, torch.Tensor]:
    """A seeded released-format ``model`` dict at the tiny model's shapes (with the unused image projector)."""
    from modeling.model import build_model

    model = build_model(ModelConfig(lora_r=lora_r), llm_path=llm, visual_dim=VISUAL_DIM, audio_dim=AUDIO_DIM)
    g = torch.Generator().manual_seed(seed)
    state = {to_released_name(n): torch.randn(p.shape, generator=g) * 0.05
             for n, p in model.named_parameters() if p.requires_grad}
    state["image_llama_proj.weight"] = torch.randn(model.hidden_size, VISUAL_DIM, generator=g)
    state["image_llama_proj.bias"] = torch.zeros(model.hidden_size)
    return state


def write_released(path: Path, state: dict, config: dict | None = FACE_CONFIG, epoch: int = 60) -> Path:
    optimizer = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-5, "params": [0]}]}
    torch.save({"model": state, "optimizer": optimizer, "config": config, "scaler": {"scale": 65536.0},
                "epoch": epoch}, path)
    return path


@pytest.fixture(scope="module")
def released(tiny_models, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("released")
    state = released_state(Path(tiny_models["llm"]))
    return write_released(root / "checkpoint_000060_loss_0.512.pth", state), state


@pytest.fixture(scope="module")
def imported(released, tiny_models, tmp_path_factory) -> Path:
    ckpt, _ = released
    out = tmp_path_factory.mktemp("imported") / "affectgpt-released"
    result = import_released(ckpt, tiny_models["llm"], out)
    assert (result.visual_stream, result.epoch, result.dropped) == ("face", 60, list(DROPPED))
    return out


def test_imported_parameters_equal_the_file(imported, released):
    from modeling.model import AffectGPT

    _, state = released
    model = AffectGPT.load_trainable(imported)
    params = {n: p for n, p in model.named_parameters() if "lora_" in n or n.startswith("fusion.")}
    assert len(params) == len(state) - len(DROPPED)
    for name, p in params.items():
        assert torch.equal(p.detach().float(), state[to_released_name(name)]), name
    spec = json.loads((imported / "affectflow_model.json").read_text())
    assert spec["visual_stream"] == "face" and spec["pooling"] == "raw"
    assert (spec["visual_dim"], spec["audio_dim"]) == (VISUAL_DIM, AUDIO_DIM)
    assert spec["source"]["sha256"] == __import__("hashlib").sha256(released[0].read_bytes()).hexdigest()
    assert spec["source"]["epoch"] == 60 and spec["source"]["dropped"] == list(DROPPED)


def _fusion_by_hand(w: dict, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """The released fusion, written from its description with the file's tensors (raw-score pooling)."""
    lin = lambda x, name: F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])  # noqa: E731
    v = lin(visual.mean(dim=1), "multi_video_embs")
    a = lin(audio.mean(dim=1), "multi_audio_embs")
    weights = lin(lin(torch.cat([v, a], dim=-1), "attention_mlp"), "fc_att")
    multi = weights[:, :1] * v + weights[:, 1:] * a
    audio_tok = lin((audio * lin(audio, "audio_attention_mlp")).sum(dim=1), "audio_llama_proj")
    visual_tok = lin((visual * lin(visual, "video_attention_mlp")).sum(dim=1), "affectgpt_proj")
    return torch.stack([lin(multi, "multi_llama_proj"), audio_tok, visual_tok], dim=1)


def test_embeddings_and_first_step_logits_equal_a_direct_computation(imported, released, tiny_models):
    """Three multimodal vectors and the first generated step's logits, against HF's Qwen2 with the
    LoRA deltas merged by hand (W + alpha/r * B @ A) and the vectors spliced at the placeholders."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modeling.model import AffectGPT
    from modeling.prompt import PLACEHOLDER_TOKENS, QUESTIONS, encode_prompt

    _, state = released
    model = AffectGPT.load_trainable(imported)
    g = torch.Generator().manual_seed(1)
    visual, audio = torch.randn(2, 8, VISUAL_DIM, generator=g), torch.randn(2, 8, AUDIO_DIM, generator=g)
    with torch.no_grad():
        ours = model.encode_multimodal(visual, audio)
        ref = _fusion_by_hand(state, visual, audio)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)

    llm_dir = Path(tiny_models["llm"])
    tok = AutoTokenizer.from_pretrained(str(llm_dir))
    tok.add_tokens(list(PLACEHOLDER_TOKENS), special_tokens=True)
    base = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32).eval()
    vocab = base.get_input_embeddings().weight.shape[0]
    if len(tok) > vocab:
        base.resize_token_embeddings(len(tok), pad_to_multiple_of=64, mean_resizing=False)
    scale = 32 / 16  # lora_alpha / r
    layers = base.model.layers
    with torch.no_grad():
        for key, a in state.items():
            m = re.match(r"llama_model\.base_model\.model\.model\.layers\.(\d+)\.(.+)\.lora_A\.default\.weight$", key)
            if m:
                b = state[key.replace("lora_A", "lora_B")]
                target = layers[int(m.group(1))].get_submodule(m.group(2))
                target.weight += scale * (b @ a)
    ids = torch.tensor([encode_prompt(tok, "I am fine.", QUESTIONS["ov"], "face")])
    with torch.no_grad():
        embeds = base.get_input_embeddings()(ids)
        for k, token in enumerate(("<MultiHere>", "<AudioHere>", "<FaceHere>")):
            hit = ids[0] == tok.convert_tokens_to_ids(token)
            assert int(hit.sum()) == 1
            embeds[0, hit] = ref[0, k]
        want = base(inputs_embeds=embeds).logits[0, -1, :vocab]
        got = model.llm(inputs_embeds=model.inputs_embeds(ids, model.encode_multimodal(visual[:1], audio[:1]))).logits
    torch.testing.assert_close(got[0, -1, :vocab], want, rtol=1e-4, atol=1e-4)


def test_auto_precision_is_what_the_checkpoint_records():
    """An imported release runs in fp16 on CUDA: the release loads its LLM with torch_dtype=torch.float16
    (my_affectgpt/models/affectgpt.py lines 93-96) and runs the fusion under fp16 autocast on a GPU
    (my_affectgpt/models/blip2.py lines 36-45); ours in bf16 on CUDA; everything in fp32 on the CPU (where the
    release's autocast is off, blip2.py line 39). An explicit precision wins."""
    from core.errors import ConfigError
    from modeling.checkpoint import pick_dtype

    released_spec, ours = {"source": {"format": "affectgpt-released"}}, {"source": {}}
    assert [pick_dtype("auto", released_spec, d) for d in ("cuda", "cuda:1", "cpu")] == ["fp16", "fp16", "fp32"]
    assert [pick_dtype("auto", ours, d) for d in ("cuda", "cpu")] == ["bf16", "fp32"]
    assert (pick_dtype("bf16", released_spec, "cuda"), pick_dtype("float16", ours, "cpu")) == ("bf16", "fp16")
    with pytest.raises(ConfigError, match="dtype must be one of auto, fp32, bf16, fp16, got 'int8'"):
        pick_dtype("int8", ours, "cpu")


def _release_fusion_fp16(fusion: dict, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """The release's attention fusion as its code writes it, under fp16 autocast with fp32 weights:
    encode_video_attention (affectgpt.py lines 463-469), encode_audio_attention (lines 558-564) and
    encode_multi_attention (lines 622-637), each a Linear scorer, a matmul over time and a projector."""
    lin = lambda x, name: F.linear(x, fusion[f"{name}.weight"], fusion[f"{name}.bias"])  # noqa: E731
    with torch.autocast("cpu", dtype=torch.float16):
        video_tok = lin(torch.matmul(visual.transpose(1, 2), lin(visual, "video_attention_mlp")).squeeze(2),
                        "affectgpt_proj")
        audio_tok = lin(torch.matmul(audio.transpose(1, 2), lin(audio, "audio_attention_mlp")).squeeze(2),
                        "audio_llama_proj")
        v = lin(torch.mean(visual, dim=1), "multi_video_embs")
        a = lin(torch.mean(audio, dim=1), "multi_audio_embs")
        attention = lin(lin(torch.cat([v, a], dim=1), "attention_mlp"), "fc_att").unsqueeze(2)
        multi = lin(torch.matmul(torch.stack([v, a], dim=2), attention).squeeze(2), "multi_llama_proj")
    return torch.stack([multi, audio_tok, video_tok], dim=1)


def test_fp16_runs_as_the_release(imported, released):
    """label.dtype=fp16: the LLM's weights in fp16 (affectgpt.py line 95), the fusion's in fp32 (plain
    nn.Linear, moved with .to(device) only: inference_hybird.py line 181) under fp16 autocast, computing the
    release's ops bit for bit."""
    from registry.resolve import load_model

    _, state = released
    model, _ = load_model(str(imported), device="cpu", dtype="fp16")
    assert {p.dtype for p in model.llm.parameters()} == {torch.float16}
    assert {p.dtype for p in model.fusion.parameters()} == {torch.float32}
    g = torch.Generator().manual_seed(3)
    visual, audio = torch.randn(2, 8, VISUAL_DIM, generator=g), torch.randn(2, 8, AUDIO_DIM, generator=g)
    with torch.no_grad():
        ours = model.encode_multimodal(visual, audio)
        want = _release_fusion_fp16({k: v for k, v in state.items() if not k.startswith("llama_model.")}, visual,
                                    audio)
    assert ours.dtype == want.dtype == torch.float16 and torch.equal(ours, want)


def _bad_state(state: dict, kind: str) -> dict:
    bad = dict(state)
    if kind == "missing key":
        del bad["fc_att.bias"]
    elif kind == "extra key":
        bad["llama_model.lm_head.lora_A.default.weight"] = torch.zeros(16, 4)
    elif kind == "wrong shape":
        bad["affectgpt_proj.weight"] = torch.zeros(5, VISUAL_DIM)
    elif kind == "wrong layer count":
        src = "llama_model.base_model.model.model.layers.0."
        for k in [k for k in state if k.startswith(src)]:
            bad[k.replace(".layers.0.", ".layers.99.")] = state[k]
    return bad


@pytest.mark.parametrize("kind, message", [
    ("missing key", r"missing key fc_att\.bias \(expected shape \[2\]\)"),
    ("extra key", r"unexpected key llama_model\.lm_head\.lora_A\.default\.weight \(shape \[16, 4\]\)"),
    ("wrong shape", r"shape mismatch affectgpt_proj\.weight: file \[5, 768\], model \[64, 768\]"),
    ("wrong layer count", r"layer count: the file has LoRA weights for 3 layers \(0\.\.99\), the LLM config has "
                          r"num_hidden_layers=2"),
])
def test_a_bad_file_is_refused_and_nothing_is_written(kind, message, released, tiny_models, tmp_path):
    ckpt = write_released(tmp_path / "bad.pth", _bad_state(released[1], kind))
    out = tmp_path / "out"
    with pytest.raises(ReleasedCheckpointError, match=message) as info:
        import_released(ckpt, tiny_models["llm"], out)
    assert str(ckpt) in str(info.value)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickle_that_would_run_code_is_refused(released, tiny_models, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    torch.save({"model": released[1], "config": _RunsCode(str(marker)), "epoch": 60}, ckpt)
    with pytest.raises(ReleasedCheckpointError, match=r"evil\.pth: refused: the file needs arbitrary unpickling"):
        import_released(ckpt, tiny_models["llm"], tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_the_release_config_imports_with_the_releases_lora(released, tiny_models, tmp_path):
    """A file carrying the release's whole config imports; the spec holds the release's LoRA: r 16 (affectgpt.py
    line 753), alpha 32 and dropout 0.05 (line 116-117) on q/k/v/o/gate/up/down of every layer (lines 112-114)."""
    ckpt = write_released(tmp_path / "full.pth", released[1], RELEASED_CONFIG)
    assert import_released(ckpt, tiny_models["llm"], tmp_path / "full").visual_stream == "face"
    spec = json.loads((tmp_path / "full" / "affectflow_model.json").read_text())
    assert (spec["lora_r"], spec["lora_alpha"], spec["lora_dropout"]) == (16, 32, 0.05)
    assert sorted(spec["lora_targets"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj",
                                                   "up_proj"])


def _with(config: dict, **model) -> dict:
    """The release's config with ``model`` keys changed (None: removed)."""
    section = {k: v for k, v in {**config["model"], **model}.items() if v is not None}
    return {**config, "model": section}


def _face_or_frame(value: str) -> dict:
    return {**RELEASED_CONFIG, "datasets": {"mercaptionplus": {"face_or_frame": value}}}


@pytest.mark.parametrize("config, message", [
    # Prompts with other tokens (base_dataset.py lines 521-525: multi only; lines 540-546: adds a frame token).
    (_face_or_frame("multiface_text"),
     r"face_or_frame='multiface_text' is not a setting the release ships: this importer supports "
     r"multiface_audio_face_text \(face\) or multiframe_audio_frame_text \(frame\)"),
    (_face_or_frame("multiface_audio_face_frame_text"), r"face_or_frame='multiface_audio_face_frame_text' is not"),
    (_with(RELEASED_CONFIG, num_video_query_token=2),
     r"config\['model'\]: num_video_query_token=2; the released model has num_video_query_token=1"),
    (_with(RELEASED_CONFIG, multi_fusion_type="qformer"), r"multi_fusion_type='qformer'; the released model has "
                                                          r"multi_fusion_type='attention'"),
    # The release's default for a missing fusion type is qformer (affectgpt.py lines 741-742).
    (_with(RELEASED_CONFIG, audio_fusion_type=None), r"no audio_fusion_type \(the release then uses 'qformer'\)"),
    (_with(RELEASED_CONFIG, acoustic_encoder="WAVLM_LARGE"), r"acoustic_encoder='WAVLM_LARGE'; the released model "
                                                             r"has acoustic_encoder='HUBERT_LARGE'"),
    (_with(RELEASED_CONFIG, visual_encoder="EVA_CLIP_G"), r"visual_encoder='EVA_CLIP_G'"),
    (_with(RELEASED_CONFIG, lora_r=8), r"lora_r=8; the released model has lora_r=16"),
])
def test_a_file_of_another_setting_or_architecture_is_refused_and_nothing_is_written(config, message, released,
                                                                                     tiny_models, tmp_path):
    ckpt = write_released(tmp_path / "other.pth", released[1], config)
    for visual in (None, "face"):
        with pytest.raises(ReleasedCheckpointError, match=message) as info:
            import_released(ckpt, tiny_models["llm"], tmp_path / "out", visual=visual)
        assert str(ckpt) in str(info.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pth"]


def test_lora_tensors_of_another_rank_or_other_targets_are_refused(released, tiny_models, tmp_path):
    rank8 = write_released(tmp_path / "rank8.pth", released_state(Path(tiny_models["llm"]), lora_r=8),
                           RELEASED_CONFIG)
    with pytest.raises(ReleasedCheckpointError, match=r"LoRA rank: the file's lora_A/lora_B tensors have rank \[8\]; "
                                                      r"the released model has rank 16"):
        import_released(rank8, tiny_models["llm"], tmp_path / "out")
    no_down = {k: v for k, v in released[1].items() if ".mlp.down_proj." not in k}
    ckpt = write_released(tmp_path / "no_down.pth", no_down, RELEASED_CONFIG)
    with pytest.raises(ReleasedCheckpointError, match=r"LoRA targets of layer\(s\) 0, 1: missing \['mlp\.down_proj'\]"):
        import_released(ckpt, tiny_models["llm"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_visual_stream_comes_from_the_file_or_the_flag(released, tiny_models, tmp_path):
    frame = write_released(tmp_path / "frame.pth", released[1],
                           {"datasets": {"mercaptionplus": {"face_or_frame": "multiframe_audio_frame_text"}}})
    assert import_released(frame, tiny_models["llm"], tmp_path / "frame").visual_stream == "frame"
    with pytest.raises(ReleasedCheckpointError, match=r"--visual face contradicts the file's "
                                                      r"face_or_frame='multiframe_audio_frame_text' \(frame\)"):
        import_released(frame, tiny_models["llm"], tmp_path / "frame-as-face", visual="face")
    unknown = write_released(tmp_path / "none.pth", released[1], config={"model": {}})
    with pytest.raises(
        ReleasedCheckpointError, match=r"none\.pth: the file does not say which visual stream.*--visual"
    ):
        import_released(unknown, tiny_models["llm"], tmp_path / "none")
    assert not (tmp_path / "none").exists()
    assert import_released(unknown, tiny_models["llm"], tmp_path / "forced", visual="face").visual_stream == "face"
    with pytest.raises(InputError, match="exists and is not an empty folder"):
        import_released(unknown, tiny_models["llm"], tmp_path / "forced", visual="face")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(InputError, match="a-file is a file, so nothing can be created under it"):
        import_released(unknown, tiny_models["llm"], tmp_path / "a-file" / "out", visual="face")


def test_the_7b_key_map_is_exactly_the_released_key_set():
    """At Qwen2.5-7B shapes (meta device, no weights): 410 keys used, the image projector's 2 dropped."""
    from modeling.model import QWEN25_7B_CONFIG
    from modeling.released import expected_model, key_map

    fusion = {
        "video_attention_mlp": [1, 768], "affectgpt_proj": [3584, 768], "audio_attention_mlp": [1, 1024],
        "audio_llama_proj": [3584, 1024], "multi_video_embs": [1024, 768], "multi_audio_embs": [1024, 1024],
        "attention_mlp": [1024, 2048], "fc_att": [2, 1024], "multi_llama_proj": [3584, 1024],
    }
    released = {f"{m}.weight" for m in fusion} | {f"{m}.bias" for m in fusion}
    released |= {f"llama_model.base_model.model.model.layers.{i}.{mod}.lora_{ab}.default.weight"
                 for i in range(28) for mod in MODULES for ab in "AB"}
    model = expected_model(dict(QWEN25_7B_CONFIG), 768, 1024, "face")
    mapping = key_map(model)
    assert set(mapping) == released and len(mapping) == 410 == 18 + 392
    assert not set(DROPPED) & set(mapping) and len(DROPPED) == 2
    params = dict(model.named_parameters())
    assert {m: list(params[mapping[f"{m}.weight"]].shape) for m in fusion} == fusion
    assert sum(params[n].numel() for n in mapping.values()) == 54_412_548


def test_cli_imports_and_the_model_runs_infer(released, tiny_models, synth_corpus, models_dir, tmp_path, capsys,
                                               one_thread):
    from affectflow.cli import main
    from core.config import load_config
    from inference.infer import InferRequest, infer

    out = tmp_path / "imported"
    assert main(["import-released", str(released[0]), "--llm", str(tiny_models["llm"]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "410" not in text and "46 tensors" in text and "image_llama_proj" in text
    video = synth_corpus / "video" / "sample_00000002.mp4"
    result = infer(InferRequest(video, None, "I am fine.", str(out), load_config(None, ["label.max_new_tokens=4"]),
                                models=models_dir))
    assert result.texts["ov"] and result.model_uri == str(out.resolve())
    bad = write_released(tmp_path / "bad.pth", _bad_state(released[1], "missing key"))
    assert main(["import-released", str(bad), "--llm", str(tiny_models["llm"]), "--out", str(tmp_path / "x")]) == 2
    assert "missing key fc_att.bias" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_register_logs_the_imported_model_with_its_source(released, tiny_models, mlflow_server, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from affectflow.cli import main

    out = tmp_path / "imported"
    assert main(["import-released", str(released[0]), "--llm", str(tiny_models["llm"]), "--out", str(out),
                 "--register", "affectgpt-released", "--alias", "released", "--mlflow-uri", mlflow_server]) == 0
    assert "models:/affectgpt-released@released" in capsys.readouterr().out
    version = MlflowClient(mlflow_server, mlflow_server).get_model_version_by_alias("affectgpt-released", "released")
    sha = __import__("hashlib").sha256(released[0].read_bytes()).hexdigest()
    assert version.tags["affectflow.source_sha256"] == sha
    assert (version.tags["affectflow.visual_stream"], version.tags["affectflow.source_epoch"]) == ("face", "60")


@pytest.mark.slow
def test_label_runs_on_the_imported_model(ray_session, imported, released, synth_corpus, models_dir, tmp_path):
    from core.config import load_config
    from inference.labeling import LabelRequest, label
    from inference.table import read_table
    from tests.fixtures.pipeline import copy_corpus

    names = ["sample_00000000", "sample_00000001", "sample_00000002"]
    corpus = copy_corpus(synth_corpus, tmp_path / "corpus", names)
    out = tmp_path / "labels.parquet"
    cfg = load_config(None, ["ray.num_cpus=2", "label.max_new_tokens=6", "preprocess.batch_size=4", "label.task=both",
                             "label.batch_size=3", "seed=0"])
    summary = label(LabelRequest(corpus, str(imported), out, cfg, models=models_dir))
    df = read_table(out).to_pandas()
    assert (summary.ok, summary.failed) == (2 * len(names), 0)
    assert sorted(set(df["name"])) == names and (df["model_uri"] == str(imported.resolve())).all()
    # The table names the released file it came from (name and sha256 of its bytes); fp32 on the CPU.
    from inference.table import read_provenance

    recorded = read_provenance(out)
    sha = __import__("hashlib").sha256(released[0].read_bytes()).hexdigest()
    assert recorded["model"] == {"uri": str(imported.resolve()), "version": "", "source_format": "affectgpt-released",
                                 "source_file": "checkpoint_000060_loss_0.512.pth", "source_sha256": sha}
    assert recorded["decoding"]["dtype"] == "fp32" and f"weights: affectgpt-released {released[0].name} sha256 {sha}" \
        in summary.format()
