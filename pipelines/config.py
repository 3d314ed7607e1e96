"""Preprocessing section of the run config (DESIGN §4, §10)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class PreprocessConfig:
    layout: Literal["mer2025", "folder", "webdataset"] = "mer2025"
    faces: Literal["openface", "opencv", "pyfeat"] = "openface"
    num_frames: int = 8
    image_size: int = 224
    sample_rate: int = 16000
    num_clips: int = 8
    clip_seconds: float = 2.0
    # Samples per batch; each batch becomes one store part.
    batch_size: int = 8
    # Samples per committed store part: larger parts read back faster and pack smaller on disk;
    # a killed job loses at most the parts in flight.
    write_batch_size: int = 256
    max_failure_rate: float = 0.01
    # Checkpoints: empty means {--models or paths.models}/clip, /hubert, /whisper.
    clip_model: str = ""
    hubert_model: str = ""
    whisper_model: str = ""
    pyfeat_model: str = ""
    # Transcribe samples without a subtitle with the local Whisper checkpoint.
    asr: bool = False
    # Encoders: "auto" = CUDA in fp16 when present, else CPU in fp32.
    device: str = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    # Ray resources. On a 2-CPU box every actor needs a fraction of a CPU or the job stalls (DESIGN §10).
    # decode_actors is the most decode actors Ray Data's autoscaler may run (it starts with one).
    # On 2 CPUs the encoder is the bottleneck; a second decode actor (~300 MiB) came and went for
    # minutes at a time, with no speed-up measurable above the noise. Raise it with the CPUs that
    # feed a GPU encoder (README).
    decode_actors: int = 1
    decode_cpus: float = 0.5
    # "fused": CLIP and HuBERT in one actor pool (one process per actor holds both models: half the
    # memory, one object-store hop); "separate": a pool each, to size them apart (e.g. GPU fractions).
    encoder_pools: Literal["fused", "separate"] = "fused"
    encoder_actors: int = 1
    encoder_cpus: float = 0.4
    encoder_gpus: float = 0.0
    writer_cpus: float = 0.1
    # Cap on the object-store bytes Ray Data keeps in flight (decoded frames queue between stages);
    # without it the budget is a share of the node's RAM. 0 = Ray's default.
    object_store_mb: int = 512
    # WebDataset shard reading (I/O bound): whole-CPU read tasks starve the actors on 2 CPUs.
    read_cpus: float = 0.1
    # torch threads per encoder actor: the one fused actor on a 2-core box measured fastest with 2
    # (bench/preprocess.py); with several encoder actors per node give each about cores/actors.
    torch_threads: int = 2

    def validate(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if self.sample_rate < 1000:
            raise ValueError(f"sample_rate must be >= 1000 Hz, got {self.sample_rate}")
        if self.num_clips < 2:
            raise ValueError(f"num_clips must be >= 2, got {self.num_clips}")
        if self.clip_seconds <= 0:
            raise ValueError(f"clip_seconds must be > 0, got {self.clip_seconds}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.write_batch_size < 1:
            raise ValueError(f"write_batch_size must be >= 1, got {self.write_batch_size}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ValueError(f"max_failure_rate must be within [0, 1], got {self.max_failure_rate}")
        if self.object_store_mb < 0:
            raise ValueError(f"object_store_mb must be >= 0, got {self.object_store_mb}")
        for key in ("decode_actors", "encoder_actors", "torch_threads"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("decode_cpus", "encoder_cpus", "writer_cpus", "encoder_gpus", "read_cpus"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.encoder_pools not in ("fused", "separate"):
            raise ValueError(f"encoder_pools must be fused or separate, got {self.encoder_pools!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
