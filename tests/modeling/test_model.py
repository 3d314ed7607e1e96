"""The AffectGPT model: exact trainable counts at Qwen2.5-7B shapes, placeholder splicing, frozen base, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from core.sections import ModelConfig
from modeling.model import AffectGPT, build_model, model_summary
from modeling.prompt import AUDIO_TOKEN, FACE_TOKEN, MULTI_TOKEN
from synth.features import SyntheticFeatures
from training.data import Collator, PromptDataset

QWEN25_7B_COUNTS = {"lora": 40_370_176, "fusion": 3_939_076, "projectors": 10_103_296, "trainable": 54_412_548}


def test_qwen25_7b_counts_on_meta_device():
    summary = model_summary("qwen2.5-7b")
    assert summary["meta"] and summary["hidden_size"] == 3584
    counts = summary["counts"]
    assert {k: counts[k] for k in QWEN25_7B_COUNTS} == QWEN25_7B_COUNTS
    assert counts["lora"] + counts["fusion"] + counts["projectors"] == counts["trainable"]
    assert 7.6e9 < counts["frozen"] < 7.7e9  # the frozen Qwen2.5-7B itself


def test_model_summary_cli_json(capsys):
    from affectflow.cli import main

    assert main(["model", "summary", "--preset", "qwen2.5-7b", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert {k: counts[k] for k in QWEN25_7B_COUNTS} == QWEN25_7B_COUNTS


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return build_model(ModelConfig(lora_dropout=0.0), llm_path=tiny_models["llm"], visual_dim=768, audio_dim=64)


@pytest.fixture(scope="module")
def batch(tiny):
    data = PromptDataset(SyntheticFeatures(6, 768, 64), tiny.tokenizer, seed=0)
    return Collator(tiny.tokenizer.eos_token_id)([data[i] for i in range(4)])


def test_only_lora_and_fusion_train(tiny):
    trainable = [n for n, p in tiny.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("fusion.") for n in trainable)
    assert not tiny.llm.get_input_embeddings().weight.requires_grad
    assert not tiny.llm.get_output_embeddings().weight.requires_grad
    counts = tiny.parameter_counts()
    # r16 on q,k,v,o (64->64, 64->32 x2, 64->64) and gate,up,down (64<->128), 2 layers
    assert counts["lora"] == 2 * 16 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)


def test_placeholders_receive_the_projected_vectors(tiny, batch):
    ids = batch["input_ids"]
    with torch.no_grad():
        mm = tiny.encode_multimodal(batch["visual"], batch["audio"])
        embeds = tiny.inputs_embeds(ids, mm)
        table = tiny.llm.get_input_embeddings().weight
    assert mm.shape == (4, 3, 64)
    tok = tiny.tokenizer
    placeholder_ids = [tok.convert_tokens_to_ids(t) for t in (MULTI_TOKEN, AUDIO_TOKEN, FACE_TOKEN)]
    assert tiny.splice_ids == placeholder_ids
    for row in range(ids.shape[0]):
        for k, tid in enumerate(placeholder_ids):
            pos = (ids[row] == tid).nonzero().flatten()
            assert len(pos) == 1
            torch.testing.assert_close(embeds[row, pos[0]], mm[row, k])
        plain = ~torch.isin(ids[row], torch.tensor(placeholder_ids))
        torch.testing.assert_close(embeds[row][plain], table[ids[row][plain]])


def test_a_row_without_placeholders_is_an_error(tiny, batch):
    ids = batch["input_ids"].clone()
    ids[0, ids[0] == tiny.splice_ids[1]] = 0
    with pytest.raises(ValueError, match="exactly one placeholder"):
        tiny.inputs_embeds(ids, torch.zeros(4, 3, 64))


def test_loss_only_on_the_answer(tiny, batch):
    labels = batch["labels"]
    ids = batch["input_ids"]
    eos = tiny.tokenizer.eos_token_id
    for row in range(ids.shape[0]):
        target = labels[row][labels[row] != -100]
        start = int((labels[row] != -100).nonzero()[0])
        assert tiny.tokenizer.decode(ids[row][:start]).endswith("###Assistant: ")
        assert int(target[-1]) == eos and tiny.tokenizer.decode(target[:-1]).endswith("###")
        assert all(int(x) not in tiny.splice_ids for x in target)
    # The loss is the token mean over exactly the answer positions (shifted), nothing else.
    with torch.no_grad():
        out = tiny(**batch)
    logits, target = out.logits[:, :-1], labels[:, 1:]
    keep = target != -100
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(logits[keep], target[keep]))


def test_save_and_load_trainable_round_trip(tiny, batch, tmp_path):
    with torch.no_grad():
        for p in tiny.fusion.parameters():
            p.add_(0.01)
        expected = tiny(**batch).loss
    tiny.save_trainable(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "adapter" / "adapter_model.safetensors").is_file()
    spec = json.loads((tmp_path / "ckpt" / "affectflow_model.json").read_text())
    assert spec["visual_dim"] == 768 and spec["audio_dim"] == 64 and spec["placeholders"][0] == "<MultiHere>"
    loaded = AffectGPT.load_trainable(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).loss, expected)


def test_softmax_pooling_option(tiny_models):
    m = build_model(ModelConfig(pooling="softmax"), llm_path=tiny_models["llm"], visual_dim=16, audio_dim=8)
    x = torch.randn(2, 8, 16)
    scores = m.fusion.visual_scorer(x).softmax(dim=1)
    with torch.no_grad():
        got = m.fusion(x, torch.randn(2, 8, 8))[:, 2]
        torch.testing.assert_close(got, m.fusion.visual_proj((x * scores).sum(1)))
