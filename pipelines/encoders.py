"""Frozen encoders as callable classes that load their model once and batch across samples.

`ClipEncoder`: CLIP ``get_image_features`` (projected, pooled) for the frame and face stacks.
`HubertEncoder`: HuBERT, mean of the last 4 hidden layers then mean over time, per 2 s clip,
with the feature extractor's normalisation taken over a sample's 8 clips together.
`WhisperASR`: optional subtitles for samples that have none.
Each uses CUDA (fp16 by default) when there is a GPU, else the CPU in fp32. Pixel and
waveform normalisation run in torch on the model's device, so only uint8 frames and raw
clips cross the object store. `*_spec` functions give the `EncoderSpec` each one writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from core.runtime import pick_device
from pipelines.stages import OK


def device_and_dtype(device: str = "auto", dtype: str = "auto"):
    """``(torch.device, torch.dtype)`` of an encoder: CUDA in fp16 when available (``auto``), else CPU in fp32."""
    import torch

    dev = torch.device(pick_device(device))
    if dtype == "auto":
        dtype = "float16" if dev.type == "cuda" else "float32"
    return dev, getattr(torch, dtype)


def _model_name(model_dir: Path) -> str:
    """The encoder name recorded in the spec: the ``model_type``; the weights hash is the identity.

    Not the directory name, so the same weights moved elsewhere keep their stored features.
    """
    try:
        return str(json.loads((model_dir / "config.json").read_text())["model_type"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def _set_threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


class ClipEncoder:
    """CLIP image tower + projection; ``__call__`` turns ``frames``/``faces`` uint8 stacks into ``frame``/``face``
    features."""

    def __init__(self, model_dir: str | Path | None, device: str = "auto", dtype: str = "auto",
                 torch_threads: int | None = None, micro_batch: int = 64, model=None, processor=None):
        import torch
        from transformers import CLIPModel

        try:  # transformers 5: the PIL processor by its own name (torchvision does not import here)
            from transformers import CLIPImageProcessorPil as CLIPImageProcessor
        except ImportError:
            from transformers import CLIPImageProcessor

        _set_threads(torch_threads)
        self.device, self.dtype = device_and_dtype(device, dtype)
        # model/processor: already-built objects (benchmarks at real shapes without saving weights).
        model = model if model is not None else CLIPModel.from_pretrained(str(model_dir))
        self.model = model.to(self.device, self.dtype).eval()
        self.processor = processor if processor is not None else CLIPImageProcessor.from_pretrained(str(model_dir))
        p = self.processor
        self.crop = (int(p.crop_size["height"]), int(p.crop_size["width"]))
        self.resize_is_identity = (not p.do_resize or p.size.get("shortest_edge") == min(self.crop))
        # rescale then normalise, (x * scale - mean) / std, folded into one x * a + b per channel.
        scale = float(p.rescale_factor) if p.do_rescale else 1.0
        mean = torch.tensor(p.image_mean, device=self.device).view(1, 3, 1, 1) if p.do_normalize else 0.0
        std = torch.tensor(p.image_std, device=self.device).view(1, 3, 1, 1) if p.do_normalize else 1.0
        self.mul = torch.as_tensor(scale / std, dtype=torch.float32, device=self.device)
        self.add = torch.as_tensor(-mean / std, dtype=torch.float32, device=self.device)
        self.micro_batch = micro_batch
        self.dim = int(self.model.config.projection_dim)

    def pixel_values(self, images: np.ndarray):
        """``uint8 [N, H, W, 3]`` -> CLIP pixel values on the device (float32 ``[N, 3, h, w]``).

        At the crop size the processor's resize and crop are identities, so only
        rescale+normalise remain and run in torch; any other size goes through the processor.
        """
        import torch

        if tuple(images.shape[1:3]) == self.crop and self.resize_is_identity:
            # copy=True: the in-place ops below never write into the caller's array, whatever its dtype.
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2)
            x = x.to(torch.float32, copy=True)
            # In place: one float buffer per micro-batch, not four (a third of CLIP's time on the CPU).
            return x.mul_(self.mul).add_(self.add)
        out = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        return out.to(self.device)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """``uint8 [N, H, W, 3]`` -> ``float32 [N, projection_dim]`` (``get_image_features``)."""
        import torch

        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(images), self.micro_batch):
                pix = self.pixel_values(images[i:i + self.micro_batch]).to(self.dtype)
                feats = self.model.get_image_features(pixel_values=pix)
                feats = getattr(feats, "pooler_output", feats)  # transformers 5 returns the output object
                outs.append(feats.float().cpu().numpy())
        return np.concatenate(outs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["status"] == OK)
        for src, dst in (("frames", "frame"), ("faces", "face")):
            stacks = batch.pop(src)
            b, t = stacks.shape[:2]
            feats = np.zeros((b, t, self.dim), np.float32)
            if ok.any():
                flat = stacks[ok].reshape(-1, *stacks.shape[2:])
                feats[ok] = self.encode(flat).reshape(int(ok.sum()), t, self.dim)
            batch[dst] = feats
        return batch


def hubert_inputs(clips, normalize: bool):
    """Per sample, normalise over all its clips together (``[B, C, T]`` torch), as the released code's extractor call.

    The released code hands a sample's ``[8, T]`` clips to ``Wav2Vec2FeatureExtractor`` as one
    array, so ``do_normalize`` takes one mean and variance over the 8 clips.
    """
    if not normalize:
        return clips
    flat = clips.reshape(clips.shape[0], -1)
    mean = flat.mean(dim=1).view(-1, 1, 1)
    var = flat.var(dim=1, unbiased=False).view(-1, 1, 1)
    return (clips - mean) / (var + 1e-7).sqrt()


class HubertEncoder:
    """HuBERT: last-4-layer mean, time mean, per 2 s clip; ``__call__`` turns ``clips`` into ``audio`` features."""

    LAYERS = 4

    def __init__(self, model_dir: str | Path | None, device: str = "auto", dtype: str = "auto",
                 torch_threads: int | None = None, micro_batch: int = 32, model=None, extractor=None):
        from transformers import HubertModel, Wav2Vec2FeatureExtractor

        _set_threads(torch_threads)
        self.device, self.dtype = device_and_dtype(device, dtype)
        model = model if model is not None else HubertModel.from_pretrained(str(model_dir))
        self.model = model.to(self.device, self.dtype).eval()
        if extractor is None:
            extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(model_dir))
        self.extractor = extractor
        self.normalize = bool(self.extractor.do_normalize)
        self.micro_batch = micro_batch
        self.dim = int(self.model.config.hidden_size)

    def encode(self, clips: np.ndarray) -> np.ndarray:
        """``float32 [B, C, T]`` (B samples of C clips) -> ``float32 [B, C, hidden]``."""
        import torch

        b, c, t = clips.shape
        if b == 0:
            return np.zeros((0, c, self.dim), np.float32)
        with torch.inference_mode():
            x = hubert_inputs(torch.from_numpy(np.ascontiguousarray(clips, np.float32)).to(self.device),
                              self.normalize).reshape(b * c, t)
            outs = []
            for i in range(0, b * c, self.micro_batch):
                hidden = self.model(x[i:i + self.micro_batch].to(self.dtype), output_hidden_states=True).hidden_states
                last = torch.stack(hidden[-self.LAYERS:]).float().mean(dim=0)  # [n, frames, hidden]
                outs.append(last.mean(dim=1).cpu().numpy())
        return np.concatenate(outs).reshape(b, c, self.dim)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["status"] == OK)
        clips = batch.pop("clips")
        feats = np.zeros((len(clips), clips.shape[1], self.dim), np.float32)
        if ok.any():
            feats[ok] = self.encode(clips[ok])
        batch["audio"] = feats
        return batch


class FusedEncoder:
    """`ClipEncoder` then `HubertEncoder` in one actor: ``preprocess.encoder_pools=fused``.

    One process holds both models (torch, transformers and Ray's worker runtime are loaded
    once, not twice, ~0.7 GB on the CPU) and a decoded batch crosses the object store once.
    Separate pools (``separate``) let each encoder scale on its own resources instead.
    """

    def __init__(self, clip_dir: str | Path, hubert_dir: str | Path,
                 modalities: tuple[str, ...] = ("frame", "face", "audio"), **kwargs: Any):
        self.clip = ClipEncoder(clip_dir, **kwargs) if {"frame", "face"} & set(modalities) else None
        self.hubert = HubertEncoder(hubert_dir, **kwargs) if "audio" in modalities else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.clip is not None:
            batch = self.clip(batch)
        if self.hubert is not None:
            batch = self.hubert(batch)
        return batch


class WhisperASR:
    """Subtitles from a local Whisper checkpoint, for ok samples whose subtitle is empty; drops ``waveform``."""

    def __init__(self, model_dir: str | Path, device: str = "auto", dtype: str = "auto",
                 torch_threads: int | None = None, max_new_tokens: int = 96, language: str | None = None):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        _set_threads(torch_threads)
        self.device, self.dtype = device_and_dtype(device, dtype)
        self.model = WhisperForConditionalGeneration.from_pretrained(str(model_dir)).to(self.device, self.dtype).eval()
        self.processor = WhisperProcessor.from_pretrained(str(model_dir))
        # Whisper's decoder has max_target_positions slots, a few taken by the start/task prompt.
        self.max_new_tokens = max(1, min(max_new_tokens, int(self.model.config.max_target_positions) - 4))
        self.language = language

    def transcribe(self, waveforms: list[np.ndarray], sr: int = 16000) -> list[str]:
        import torch

        if not waveforms:
            return []
        feats = self.processor.feature_extractor([np.asarray(w, np.float32) for w in waveforms],
                                                 sampling_rate=sr, return_tensors="pt").input_features
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.language:
            kwargs.update(language=self.language, task="transcribe")
        with torch.inference_mode():
            ids = self.model.generate(feats.to(self.device, self.dtype), **kwargs)
        return [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        waves = batch.pop("waveform")
        need = [i for i in range(len(waves))
                if batch["status"][i] == OK and not batch["subtitle"][i] and len(waves[i])]
        if need:
            subtitle = np.array(batch["subtitle"], dtype=object)
            try:
                texts = self.transcribe([waves[i] for i in need])
            except Exception as exc:  # noqa: BLE001 - a failed transcription fails these samples, not the job
                status, error = np.array(batch["status"], dtype=object), np.array(batch["error"], dtype=object)
                for i in need:
                    status[i] = "failed"
                    error[i] = f"asr/error: sample {batch['name'][i]!r}: {type(exc).__name__}: {str(exc)[:200]}"
                batch["status"], batch["error"] = status, error
                return batch
            for i, text in zip(need, texts):
                subtitle[i] = text
            batch["subtitle"] = subtitle
        return batch


def _clip_preprocess(model_dir: Path, num_frames: int, image_size: int) -> dict[str, str]:
    cfg = json.loads((model_dir / "preprocessor_config.json").read_text())
    keys = ("do_resize", "size", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
            "do_normalize", "image_mean", "image_std")
    return {
        "sampling": f"uniform floor(i*n/{num_frames}); n<{num_frames}: all then last repeated",
        "num_frames": str(num_frames),
        "decode_size": f"{image_size}x{image_size} no aspect",
        "processor": json.dumps({k: cfg.get(k) for k in keys}, sort_keys=True),
    }


def clip_specs(model_dir: str | Path, faces: str, num_frames: int = 8, image_size: int = 224,
               dtype: str = "float16"):
    """The frame and face `EncoderSpec` of a CLIP checkpoint under this preprocessing."""
    from features.spec import EncoderSpec, hash_weights

    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    common = dict(encoder=_model_name(model_dir), weights_hash=hash_weights(model_dir),
                  layer="visual_projection", pooling="pooler_output", dim=int(cfg.get("projection_dim", 768)),
                  num_steps=num_frames, dtype=dtype)
    base = _clip_preprocess(model_dir, num_frames, image_size)
    frame = EncoderSpec(modality="frame", preprocess={**base, "source": "decord rgb"}, **common)
    face = EncoderSpec(modality="face", preprocess={
        **base, "source": f"faces={faces}", "channels": "bgr",
        "face_resize": f"cv2 INTER_LINEAR to {image_size}x{image_size}",
        "decode_size": f"{image_size}x{image_size} no aspect" if faces != "openface" else "openface crop",
    }, **common)
    return frame, face


def hubert_spec(model_dir: str | Path, sample_rate: int = 16000, num_clips: int = 8,
                clip_seconds: float = 2.0, dtype: str = "float16"):
    """The audio `EncoderSpec` of a HuBERT checkpoint under this preprocessing."""
    from features.spec import EncoderSpec, hash_weights

    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    ext = json.loads((model_dir / "preprocessor_config.json").read_text())
    return EncoderSpec(
        modality="audio", encoder=_model_name(model_dir), weights_hash=hash_weights(model_dir),
        layer=f"mean(hidden_states[-{HubertEncoder.LAYERS}:])", pooling="time_mean",
        dim=int(cfg["hidden_size"]), num_steps=num_clips, dtype=dtype,
        preprocess={
            "sample_rate": str(sample_rate), "mono": "channel mean", "resample": "soxr_hq",
            "clips": f"{num_clips}x{clip_seconds}s at i*max(D-{clip_seconds},0)/{num_clips}",
            "normalize": "joint over the sample's clips" if ext.get("do_normalize") else "none",
            "source": "wav else video track",
        },
    )
