"""The tiny CLIP / HuBERT / Qwen2 checkpoints load and run like the real ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPModel,
    HubertModel,
)

from synth.tiny_models import ENDOFTEXT, IM_END, IM_START, build_tiny_models

PROMPT = (
    "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. "
    "The audio content is as follows: <Audio><AudioHere></Audio>. "
    "Meanwhile, we uniformly sample raw frames from the video and extract faces from these "
    "frames: <Video><FaceHere></Video>. The subtitle of this video is: "
    "<Subtitle>Why didn't you tell me, Zoë? 真的吗</Subtitle>. Now, please answer my question "
    "based on all the provided information. Please recognize all possible emotional states of "
    "the character. ###Assistant: The character's emotional state is happy, surprised.###"
)


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("tiny") / "seed0"
    return root, build_tiny_models(root, seed=0)


def test_returns_the_three_dirs(built):
    root, paths = built
    assert paths == {"clip": root / "clip", "hubert": root / "hubert", "llm": root / "qwen2"}
    for path in paths.values():
        assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_clip_image_features_are_768(built):
    _, paths = built
    processor = AutoImageProcessor.from_pretrained(paths["clip"])
    assert processor.size == {"shortest_edge": 224}
    assert processor.crop_size == {"height": 224, "width": 224}
    model = CLIPModel.from_pretrained(paths["clip"]).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 224, 224)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    # transformers 5 returns a ModelOutput; the projected features are its pooler_output.
    features = out if isinstance(out, torch.Tensor) else out.pooler_output
    assert features.shape == (2, 768)
    assert torch.isfinite(features).all()


def test_hubert_hidden_states(built):
    _, paths = built
    extractor = AutoFeatureExtractor.from_pretrained(paths["hubert"])
    assert extractor.sampling_rate == 16000 and extractor.do_normalize
    model = AutoModel.from_pretrained(paths["hubert"]).eval()
    assert isinstance(model, HubertModel)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(32000).astype(np.float32) for _ in range(2)]
    inputs = extractor(clips, sampling_rate=16000, return_tensors="pt")
    assert "attention_mask" not in inputs
    with torch.no_grad():
        out = model(inputs["input_values"], output_hidden_states=True)
    cfg = model.config
    assert len(out.hidden_states) == cfg.num_hidden_layers + 1
    # 2 s at 16 kHz -> 99 frames, as for the real 320x-downsampling HuBERT.
    assert out.hidden_states[-1].shape == (2, 99, cfg.hidden_size)


def test_tokenizer_roundtrip_and_specials(built):
    _, paths = built
    tok = AutoTokenizer.from_pretrained(paths["llm"])
    ids = tok(PROMPT)["input_ids"]
    assert tok.decode(ids) == PROMPT
    assert tok.bos_token is None
    assert tok.eos_token == IM_END and tok.pad_token == ENDOFTEXT
    special = tok.convert_tokens_to_ids([ENDOFTEXT, IM_START, IM_END])
    # Qwen order: specials directly after the BPE vocab, endoftext < im_start < im_end.
    assert special == [len(tok) - 3, len(tok) - 2, len(tok) - 1]
    assert tok.eos_token_id == special[2] and tok.pad_token_id == special[0]
    assert tok(f"hi{IM_END}")["input_ids"][-1] == special[2]
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.endswith(f"{IM_START}user\nhi{IM_END}\n{IM_START}assistant\n")


def test_qwen2_generates(built):
    _, paths = built
    tok = AutoTokenizer.from_pretrained(paths["llm"])
    model = AutoModelForCausalLM.from_pretrained(paths["llm"]).eval()
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (64, 2, 4)
    assert cfg.num_key_value_heads == 2 and cfg.max_position_embeddings == 2048
    assert cfg.vocab_size % 64 == 0 and len(tok) <= cfg.vocab_size < len(tok) + 64
    assert cfg.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    inputs = tok(["###Human: hello ###Assistant: "], return_tensors="pt")
    n = inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert n < out.shape[1] <= n + 4


def test_deterministic_and_seeded(built, tmp_path):
    root, _ = built
    # Same seed in a fresh process (new hash seeds, fresh RNG) must give the same bytes.
    again = tmp_path / "again"
    code = (
        "import sys; from synth.tiny_models import build_tiny_models; "
        "build_tiny_models(sys.argv[1], 0)"
    )
    repo = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-c", code, str(again)]
    subprocess.run(cmd, check=True, cwd=repo, capture_output=True)
    first, second = _files(root), _files(again)
    assert sorted(first) == sorted(second)
    for name, data in first.items():
        assert data == second[name], name
    other = _files(build_tiny_models(tmp_path / "seed1", seed=1)["llm"].parent)
    for kind in ("clip", "hubert", "qwen2"):
        assert other[f"{kind}/model.safetensors"] != first[f"{kind}/model.safetensors"]
    assert other["qwen2/tokenizer.json"] == first["qwen2/tokenizer.json"]


def test_small_on_disk(built):
    root, _ = built
    assert sum(len(b) for b in _files(root).values()) < 50 * 2**20
