"""Tiny random CLIP / HuBERT / Qwen2 checkpoints for tests and the demo.

This module owns the stand-ins for the three frozen checkpoints AffectGPT loads
(CLIP ViT-L/14, chinese-hubert-large, Qwen2.5-7B-Instruct). Each is the real
architecture class at toy width, saved with ``save_pretrained`` next to the same kind
of preprocessor / tokenizer files as the real checkpoint, so every loader that takes a
local path runs unchanged on them. The output widths that other code stores or
projects from are kept where they matter: CLIP projects to 768 (stored frame/face
features are ``[8, 768]``), and HuBERT keeps the real 320x audio downsampling.

The build is a pure function of ``seed``: same seed, byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    GenerationConfig,
    HubertConfig,
    HubertModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Tokenizer,
    Wav2Vec2FeatureExtractor,
)

# Qwen2's ids put the special tokens right after the BPE merges (151643..151645 in the
# real vocab); keeping that order means code that hard-codes nothing still sees
# "specials last", and the embedding rows past them are free for added placeholders.
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)

# The exact Qwen2 pre-tokenizer split (transformers' Qwen2Tokenizer rebuilds its
# pipeline with this regex on load, so training with it keeps saved merges and the
# rebuilt tokenizer consistent).
_QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# A cap: the embedded text runs out of pairs at ~1960 merged tokens (+3 specials).
BPE_VOCAB_SIZE = 1997
VOCAB_MULTIPLE = 64  # Qwen pads its embedding table (151665 tokens -> 152064 rows) likewise

# Qwen2.5-Instruct's ChatML template without tool calling and with a generic system turn.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_PROMPT_FACE = (
    "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. "
    "The audio content is as follows: <Audio><AudioHere></Audio>. "
    "Meanwhile, we uniformly sample raw frames from the video and extract faces from these "
    "frames: <Video><FaceHere></Video>. The subtitle of this video is: "
    "<Subtitle>{subtitle}</Subtitle>. Now, please answer my question based on all the "
    "provided information. {question} ###Assistant: "
)
_PROMPT_FRAME = _PROMPT_FACE.replace(
    "from the video and extract faces from these frames: <Video><FaceHere></Video>",
    "from the video: <Video><FrameHere></Video>",
)
_QUESTIONS = (
    "Please infer the person's emotional state and provide your reasoning process.",
    "Please recognize all possible emotional states of the character.",
)
_EMOTIONS = (
    "happy joyful relaxed calm content pleased excited cheerful delighted grateful proud hopeful "
    "sad unhappy disappointed depressed lonely hurt gloomy upset angry annoyed furious irritated "
    "frustrated resentful worried anxious nervous afraid fearful scared tense uneasy surprised "
    "astonished amazed shocked confused puzzled doubtful disgusted contemptuous bored tired "
    "neutral serious helpless embarrassed ashamed guilty jealous curious confident determined "
    "positive negative sentiment emotion emotional state anger joy sadness fear surprise disgust "
    "amused affectionate loving tender sympathetic compassionate thankful satisfied optimistic "
    "enthusiastic eager inspired playful peaceful serene comfortable secure relieved triumphant "
    "miserable heartbroken grieving sorrowful melancholy regretful remorseful hopeless despairing "
    "lost abandoned rejected isolated insecure vulnerable hesitant reluctant skeptical suspicious "
    "distrustful cautious alarmed panicked terrified horrified stressed overwhelmed exhausted "
    "impatient restless agitated hostile aggressive bitter indignant outraged offended insulted "
    "humiliated awkward shy timid nostalgic wistful sentimental moved touched admiring respectful "
    "envious disdainful sarcastic mocking teasing dismissive indifferent apathetic detached "
    "thoughtful pensive reflective contemplative focused attentive interested fascinated "
    "intrigued startled stunned bewildered perplexed uncertain troubled disturbed distressed "
    "displeased dissatisfied discontent grumpy moody sulky defensive stubborn proud arrogant "
    "smug complacent brave courageous bold assertive dominant submissive ashamed"
)
_SENTENCES = (
    "In the text, the speaker says that everything is fine, but the tone suggests otherwise.",
    "In the audio, the voice is loud and fast, which indicates anger or excitement.",
    "In the video, the person frowns and looks down, showing sadness and disappointment.",
    "The character smiles widely and laughs, so the emotional state is happy and relaxed.",
    "Her eyebrows are raised and her mouth is open, which suggests surprise.",
    "He speaks slowly in a low voice and avoids eye contact; he seems worried and tired.",
    "Considering the subtitle, the facial expression and the tone of voice together, "
    "the most likely emotion is frustration.",
    "I can't believe you did that! Why didn't you tell me earlier?",
    "Thank you so much, this is the best day of my life.",
    "Don't worry, we'll figure it out tomorrow. It's going to be okay.",
    "What are you talking about? I never said that.",
    "The weather is nice today and we are going to the park with our friends.",
    "Numbers like 0 1 2 3 4 5 6 7 8 9 10 16000 224 768 1024 appear in logs.",
    "You are a helpful assistant. The user asks a question and the assistant answers it.",
    "Based on the clues from the audio, video and text, the speaker may feel anxious.",
    "The woman looks at the camera with a gentle smile while talking about her family.",
    "The man raises his voice, points his finger and walks away from the table.",
    "The background music is quiet, and the room is dark except for a small lamp.",
    "When she hears the news, her eyes fill with tears and her hands begin to shake.",
    "His answer is short and cold, which implies that he does not want to continue.",
    "They are sitting together in a restaurant, discussing plans for the holiday.",
    "The child jumps up and down, clapping and shouting with excitement.",
    "After a long silence, the old man sighs deeply and shakes his head.",
    "The teacher explains the problem patiently, but the students still look confused.",
    "Although the words are polite, the speaker's expression reveals hidden irritation.",
    "Their conversation becomes more intense as the argument continues.",
    "The customer complains about the service and asks to speak with the manager.",
    "My brother called yesterday; he has finally found a new job in another city.",
    "Could you please repeat the question? I did not hear it clearly.",
    "We should probably leave now, otherwise we will miss the last train home.",
    "The doctor said the results were normal, so there is nothing to worry about.",
    "Everyone in the office was surprised when the director announced his retirement.",
    "Honestly, I think this movie was much better than the original book.",
    "Listen carefully, because I am only going to say this once.",
    "The evidence includes lowered eyebrows, tightened lips and a trembling voice.",
    "Overall, the clues point to a mixture of nervousness and cautious optimism.",
    "Training examples, validation metrics, checkpoints, features, labels and descriptions.",
    "Spring, summer, autumn and winter; morning, afternoon, evening and night.",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April.",
    "Mother father sister brother daughter son friend neighbour colleague stranger police.",
    "Walk run speak listen watch think remember forget believe understand explain describe.",
)


def _corpus() -> list[str]:
    """Embedded training text: the model's prompts, answers, emotion words and chat."""
    texts = []
    for question in _QUESTIONS:
        for template in (_PROMPT_FACE, _PROMPT_FRAME):
            for subtitle in _SENTENCES[7:12]:
                texts.append(template.format(subtitle=subtitle, question=question))
    words = _EMOTIONS.split()
    for i in range(len(words)):
        labels = ", ".join(words[i : i + 1 + i % 3])
        texts.append(f"The character's emotional state is {labels}.###")
    texts.extend(s + "###" for s in _SENTENCES)
    # Capitalised forms too: labels start sentences in free-text descriptions.
    texts.extend([_EMOTIONS, _EMOTIONS.title()])
    texts.append(f"{IM_START}system\nYou are a helpful assistant.{IM_END}\n")
    return texts


def build_tokenizer() -> Qwen2Tokenizer:
    """Train a Qwen2-style byte-level BPE (~2000 tokens) on the embedded text."""
    raw = Tokenizer(models.BPE())
    raw.normalizer = normalizers.NFC()
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        show_progress=False,
        # Every byte is a token, so any text (any language) round-trips like Qwen's.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    raw.train_from_iterator(_corpus(), trainer=trainer)
    bpe = raw.get_vocab()
    vocab = dict(sorted(bpe.items(), key=lambda kv: kv[1]))
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    merges = [tuple(m) for m in _merges_of(raw)]
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
        errors="replace",
        split_special_tokens=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _merges_of(raw: Tokenizer) -> list[list[str]]:
    # `tokenizers` exposes merges only through the serialised model.
    merges = json.loads(raw.to_str())["model"]["merges"]
    return [m.split(" ") if isinstance(m, str) else m for m in merges]


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # Fork the RNG so building test assets leaves the caller's torch stream untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def build_clip(out: Path, seed: int) -> Path:
    """Tiny CLIPModel (ViT /14 at 224 px, 768-d projection) plus the ViT-L/14 processor config."""
    config = CLIPConfig(
        text_config=dict(
            vocab_size=1024,  # text tower is unused here; a small table keeps the files small
            bos_token_id=1022,  # CLIP keeps bos/eos at the top of its vocab
            eos_token_id=1023,
            pad_token_id=1,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=224,
            patch_size=14,
        ),
        projection_dim=768,
    )
    with _seeded(seed):
        model = CLIPModel(config).eval()
    model.save_pretrained(out)
    # The slow (PIL) class: torchvision does not import beside the CPU torch. It saves as
    # "CLIPImageProcessor", the same type name as the real checkpoint.
    CLIPImageProcessorPil(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        do_normalize=True,
        do_resize=True,
        do_convert_rgb=True,
        resample=3,  # bicubic, as the real processor
    ).save_pretrained(out)
    return out


def build_hubert(out: Path, seed: int) -> Path:
    """Tiny HubertModel with the large model's layout and 320x downsampling, plus its extractor."""
    config = HubertConfig(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=128,
        conv_dim=(32,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        # hubert-large layout: layer-normed conv stack with bias, pre-norm transformer.
        feat_extract_norm="layer",
        conv_bias=True,
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    with _seeded(seed + 1):
        model = HubertModel(config).eval()
    model.save_pretrained(out)
    # chinese-hubert-large's extractor settings; do_normalize matters because the
    # encoder normalises a sample's 8 clips together.
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        padding_side="right",
        do_normalize=True,
        return_attention_mask=False,
    ).save_pretrained(out)
    return out


LM_HEAD_SCALE = 25.0


def build_qwen2(out: Path, seed: int) -> Path:
    """Tiny Qwen2ForCausalLM with a locally trained Qwen2-style tokenizer and generation config."""
    tok = build_tokenizer()
    eos_id = tok.convert_tokens_to_ids(IM_END)
    pad_id = tok.convert_tokens_to_ids(ENDOFTEXT)
    config = Qwen2Config(
        vocab_size=_round_up(len(tok), VOCAB_MULTIPLE),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False,  # as Qwen2.5-7B
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    with _seeded(seed + 2):
        model = Qwen2ForCausalLM(config).eval()
        # A trained LLM's output head has large rows; a random one (std 0.02) behind the frozen
        # final RMSNorm keeps every logit within about +-1, so a LoRA on the frozen base could not
        # take the loss below ~6.5 nats and the tiny model would never learn. Give the frozen head
        # a usable range (std 0.5), as real checkpoints have.
        with torch.no_grad():
            model.lm_head.weight.mul_(LM_HEAD_SCALE)
    # Greedy by default; stop ids as Qwen2.5-Instruct's generation_config.
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id, eos_token_id=[eos_id, pad_id], pad_token_id=pad_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_tiny_models(out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write tiny random CLIP, HuBERT and Qwen2 checkpoints under ``out``; return their dirs."""
    out = Path(out)
    paths = {"clip": out / "clip", "hubert": out / "hubert", "llm": out / "qwen2"}
    build_clip(paths["clip"], seed)
    build_hubert(paths["hubert"], seed)
    build_qwen2(paths["llm"], seed)
    return paths
