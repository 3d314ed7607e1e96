"""Our 48 kHz -> 16 kHz resampling (soxr_hq, librosa's default) against the release's (torchaudio's
``functional.resample``): how far apart the waveforms and the HuBERT features of the two are.

The release reads a wav with ``torchaudio.load``, resamples every channel with
``torchaudio.functional.resample`` (a Hann-windowed sinc, 6 zero crossings, roll-off 0.99) and then
averages two channels; we average first and resample with soxr (``pipelines.audio.load_wav``). No
torchaudio wheel matches our torch (2.13.0) on the CPU: the PyPI wheels of torchaudio 2.11 link CUDA's
libc10_cuda.so. So, when torchaudio does not import, the release's side runs :func:`sinc_hann_resample`,
the same kernel and strided convolution written here; it gave torchaudio 2.11.1's output bit for bit
(that wheel's Python code run with our torch, from 48, 44.1, 22.05 and 8 kHz stereo).

Both sides then go through the same clipping (8 clips of 2 s) and the same tiny HuBERT (random weights,
``affectflow tiny-models``), on the CPU in fp32, one thread. The signals are synthetic voices
(``synth.corpus.render_audio``), a different voice in each channel, 6 s of 48 kHz stereo 16-bit PCM.

    .venv/bin/python bench/resample.py [--seconds 6] [--models DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np


def sinc_hann_resample(waveform, orig: int, new: int, zeros: int = 6, rolloff: float = 0.99):
    """``[C, N] -> [C, ceil(N·new/orig)]``: torchaudio's ``sinc_interp_hann`` resampling (its defaults)."""
    import torch

    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    base = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / base)
    dtype = waveform.dtype  # torchaudio builds the kernel in the waveform's dtype
    idx = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + idx
    t = (t * base).clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), t.sin() / t) * (window * (base / orig))
    x = torch.nn.functional.pad(waveform.reshape(-1, waveform.shape[-1]), (width, width + orig))
    out = torch.nn.functional.conv1d(x[:, None], kernel, stride=orig).transpose(1, 2)
    n = math.ceil(new * waveform.shape[-1] / orig)
    return out.reshape(waveform.shape[0], -1)[:, :n]


def released_load(path: Path, sr: int = 16000) -> tuple[np.ndarray, str]:
    """Mono ``float32`` at ``sr`` as the release loads it (resample each channel, then average two)."""
    import soundfile as sf
    import torch

    data, native = sf.read(str(path), dtype="float32", always_2d=True)
    wave = torch.from_numpy(data.T.copy())
    try:
        import torchaudio.functional as taf

        out, how = taf.resample(wave, native, sr), "torchaudio.functional.resample"
    except (ImportError, OSError):
        out, how = sinc_hann_resample(wave, native, sr), "sinc_hann_resample (torchaudio's kernel; no wheel here)"
    if out.shape[0] == 2:
        out = out.mean(dim=0, keepdim=True)
    return out[0].numpy(), how


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--models", help="a folder with hubert/ (default: tiny models built in a temp folder)")
    args = ap.parse_args(argv)

    import soundfile as sf
    import torch

    from pipelines.audio import clip_audio, load_wav
    from pipelines.encoders import HubertEncoder
    from synth.corpus import EMOTIONS, render_audio
    from synth.tiny_models import build_tiny_models

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_resample-") as tmp:
        root = Path(tmp)
        models = Path(args.models) if args.models else root / "models"
        if not args.models:
            build_tiny_models(models, seed=0)
        hubert = HubertEncoder(models / "hubert", device="cpu", dtype="float32")
        rng = np.random.default_rng(0)
        rows, how = [], ""
        emotions = [e for e in EMOTIONS if e != "neutral"]
        for i, emotion in enumerate(emotions):
            other = emotions[(i + 1) % len(emotions)]
            stereo = np.stack([render_audio(emotion, args.seconds, 48_000, rng),
                               render_audio(other, args.seconds, 48_000, rng)], axis=1)
            path = root / f"{emotion}.wav"
            sf.write(str(path), stereo, 48_000, subtype="PCM_16")
            ours = load_wav(path, 16_000)
            theirs, how = released_load(path, 16_000)
            n = min(len(ours), len(theirs))
            rel = float(np.linalg.norm(ours[:n] - theirs[:n]) / np.linalg.norm(theirs[:n]))
            fa, fb = (hubert.encode(clip_audio(y, 16_000)[None])[0] for y in (ours, theirs))
            cos = cosine(fa, fb)
            rows.append((f"{emotion}+{other}", len(ours), len(theirs), rel, float(cos.mean()), float(cos.min())))
    print(f"48 kHz stereo -> 16 kHz mono, {args.seconds:g} s; ours: soxr_hq (average, then resample); "
          f"release: {how} (resample, then average)")
    print(f"HuBERT: {'tiny, random weights' if not args.models else models / 'hubert'}; CPU fp32, 1 thread; "
          "features: last-4-layer mean, time mean, per 2 s clip (8 clips)")
    print(f"{'signal':<18} {'samples ours/release':>21} {'wave rel. L2 diff':>18} {'feature cos mean':>17} "
          f"{'min (of 8 clips)':>17}")
    for name, na, nb, rel, mean, low in rows:
        print(f"{name:<18} {f'{na}/{nb}':>21} {rel:>18.2e} {mean:>17.6f} {low:>17.6f}")
    means = [r[4] for r in rows]
    lowest = min(r[5] for r in rows)
    print(f"over {len(rows)} files: feature cosine mean {np.mean(means):.6f}, lowest clip {lowest:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
