"""The run-config sections of each stage: preprocessing, store, model, training, labeling, scoring.

Plain dataclasses with a ``validate`` that raises ``ConfigError`` naming the field;
:mod:`core.config` composes them into :class:`core.config.Config` and loads YAML into them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.errors import ConfigError


@dataclass
class StoreConfig:
    """How features are stored: element type, part size and compression.

    bf16 is not offered: numpy and the Zarr v3 spec have no bfloat16 type, and fp16 holds
    CLIP/HuBERT features (|x| far below 65504) to about three significant digits.
    """

    dtype: Literal["float16", "float32"] = "float16"
    # One part (one chunk per array) per write: the preprocess job's write batch size. Reads pay
    # about 1 ms per part, so small parts slow loading (bench/store_read.py: parts of 8 load 16x
    # slower than 256); `affectflow store compact` merges small parts after a job.
    samples_per_chunk: int = 256
    compression: Literal["zstd", "none"] = "zstd"
    compression_level: int = 3

    def validate(self) -> None:
        if self.samples_per_chunk < 1:
            raise ConfigError(f"samples_per_chunk must be >= 1, got {self.samples_per_chunk}")
        if not -7 <= self.compression_level <= 22:
            raise ConfigError(f"compression_level must be in [-7, 22] (zstd), got {self.compression_level}")


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
    # Folder corpora: read symbolic links whose target is outside the corpus root (refused by default).
    follow_symlinks: bool = False
    # Encoders: "auto" = CUDA in fp16 when present, else CPU in fp32.
    device: str = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    # Ray resources. On a 2-CPU box every actor needs a fraction of a CPU or the job stalls.
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
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.image_size < 1:
            raise ConfigError(f"image_size must be >= 1, got {self.image_size}")
        if self.sample_rate < 1000:
            raise ConfigError(f"sample_rate must be >= 1000 Hz, got {self.sample_rate}")
        if self.num_clips < 2:
            raise ConfigError(f"num_clips must be >= 2, got {self.num_clips}")
        if self.clip_seconds <= 0:
            raise ConfigError(f"clip_seconds must be > 0, got {self.clip_seconds}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.write_batch_size < 1:
            raise ConfigError(f"write_batch_size must be >= 1, got {self.write_batch_size}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(f"max_failure_rate must be within [0, 1], got {self.max_failure_rate}")
        if self.object_store_mb < 0:
            raise ConfigError(f"object_store_mb must be >= 0, got {self.object_store_mb}")
        for key in ("decode_actors", "encoder_actors", "torch_threads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("decode_cpus", "encoder_cpus", "writer_cpus", "encoder_gpus", "read_cpus"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.encoder_pools not in ("fused", "separate"):
            raise ConfigError(f"encoder_pools must be fused or separate, got {self.encoder_pools!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")


@dataclass
class ModelConfig:
    """Which model to build: preset, visual stream, pooling and LoRA shape."""

    preset: Literal["tiny", "qwen2.5-7b"] = "tiny"
    # The base LLM folder; empty: `<paths.models>/qwen2` for tiny (from `affectflow tiny-models`).
    llm_path: str = ""
    visual_stream: Literal["face", "frame"] = "face"
    pooling: Literal["raw", "softmax"] = "raw"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = False

    def validate(self) -> None:
        if self.lora_r < 1:
            raise ConfigError(f"lora_r must be >= 1, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be within [0, 1), got {self.lora_dropout}")


@dataclass
class TrainConfig:
    """The loop: data parallelism, batch, optimiser, schedule, checkpoints."""

    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    zero_stage: int = 2
    epochs: int = 1
    # Optimizer steps per epoch; 0 = one pass over the data (the released run used 5,000).
    steps_per_epoch: int = 0
    global_batch_size: int = 8
    micro_batch_size: int = 4
    lr: float = 1e-5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    # Linear warmup then cosine down to lr * min_lr_ratio; 0 and 1.0 give the released constant LR.
    warmup_steps: int = 0
    min_lr_ratio: float = 1.0
    grad_clip: float = 0.0
    max_tokens: int = 1024
    # Probability of the description task when a sample has a reason (else OV labels).
    description_prob: float = 0.5
    checkpoint_every: int = 0
    keep_checkpoints: int = 0
    log_every: int = 1
    max_failures: int = 0
    # Test hook: rank `fail_rank` exits hard after this optimizer step on a fresh start (0 = never).
    fail_at_step: int = 0
    fail_rank: int = 0
    progress: bool = True
    # A run stops (and fails) after this many consecutive steps with a non-finite loss or gradient norm.
    max_bad_steps: int = 3

    def validate(self) -> None:
        if self.zero_stage not in (1, 2, 3):  # stage 0 has no overflow check: a non-finite update would apply
            raise ConfigError(f"zero_stage must be 1, 2 or 3, got {self.zero_stage}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.micro_batch_size < 1 or self.global_batch_size < 1:
            raise ConfigError("global_batch_size and micro_batch_size must be >= 1")
        per_step = self.micro_batch_size * self.workers
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"global_batch_size {self.global_batch_size} must be a multiple of "
                f"micro_batch_size x workers = {self.micro_batch_size} x {self.workers}"
            )
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_tokens < 64:
            raise ConfigError(f"max_tokens must be >= 64, got {self.max_tokens}")
        if not 0.0 <= self.description_prob <= 1.0:
            raise ConfigError(f"description_prob must be within [0, 1], got {self.description_prob}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be within [0, 1], got {self.min_lr_ratio}")
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two numbers within [0, 1), got {list(self.betas)}")
        if self.grad_clip < 0:
            raise ConfigError(f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        for key in ("warmup_steps", "steps_per_epoch", "checkpoint_every", "keep_checkpoints", "max_failures",
                    "fail_at_step", "fail_rank"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.log_every < 1:
            raise ConfigError(f"log_every must be >= 1, got {self.log_every}")
        if self.max_bad_steps < 1:
            raise ConfigError(f"max_bad_steps must be >= 1, got {self.max_bad_steps}")


@dataclass
class LabelConfig:
    # A named task (its released question), "both" (ov + description), or a comma list of tasks;
    # `question` asks your own question instead (task "question" in the table).
    task: str = "ov"
    question: str = ""
    # Candidates of the closed-set task, and the range the valence task asks for.
    labels: list[str] = field(default_factory=list)
    valence_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    batch_size: int = 8
    # New tokens per row; 0: each task's own budget (ov 64, sentiment/valence/closed 32, description
    # and questions 1,200). The prompt budget is separate and never shrinks with it.
    max_new_tokens: int = 0
    max_prompt_tokens: int = 800
    # greedy (ours), or released: sampling as the release's generate call (temperature 1, top-p 0.9,
    # repetition penalty 1.0, the LLM's own top-k), up to 1,200 new tokens, seeded per (seed, sample, task)
    # so a rerun repeats.
    decoding: Literal["greedy", "released"] = "greedy"
    # Precision of the LLM and fusion: auto is what the checkpoint records (fp16 for an imported release on
    # CUDA, as the release ran: the LLM in fp16, the fusion under fp16 autocast; bf16 for ours on CUDA; fp32
    # on the CPU), or fp32, bf16, fp16.
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # `affectflow label` exits 1 when more of the output table's rows than this are failed.
    max_failure_rate: float = 0.01
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 0.9
    # Decoding backend, same tokens either way: "hf" (the model's DynamicCache; a batch runs until its
    # longest row ends), "static" (a cache of cache_rows x cache_tokens allocated once, a one-token step
    # compiled once on CUDA, and a stopped row's slot refilled with the next row of the actor's batch),
    # "auto": static on CUDA, hf on the CPU (labeling and benchmark; `infer` of one video: hf, where a
    # compile would cost more than it saves). Refill needs rows waiting: on a GPU give each actor batches
    # of several times cache_rows rows (label.batch_size x the number of tasks).
    backend: Literal["auto", "hf", "static"] = "auto"
    cache_rows: int = 64
    # Tokens per cache row (prompt + new tokens); 0: max_prompt_tokens + the largest answer budget asked.
    # Every step reads the whole cache, so a tighter value is faster; a row over it fails (cache/too-long).
    cache_tokens: int = 0
    # The model's actor pool. On a 2-CPU box actors need a fraction of a CPU or the job stalls
    # (whole-CPU actors leave none for the read tasks).
    # actor_gpus 0 = one GPU per actor when the cluster has GPUs, else none.
    actors: int = 1
    actor_cpus: float = 0.5
    actor_gpus: float = 0.0
    # "auto": CUDA when the actor sees a GPU, else the CPU.
    device: str = "auto"
    torch_threads: int = 1

    def validate(self) -> None:
        if self.actors < 1:
            raise ConfigError(f"actors must be >= 1, got {self.actors}")
        if self.actor_cpus < 0 or self.actor_gpus < 0:
            raise ConfigError("actor_cpus and actor_gpus must be >= 0")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.dtype not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"dtype must be auto, fp32, bf16 or fp16, got {self.dtype!r}")
        if self.torch_threads < 0:
            raise ConfigError(f"torch_threads must be >= 0, got {self.torch_threads}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be >= 1, or 0 for each task's own budget, "
                              f"got {self.max_new_tokens}")
        if self.max_prompt_tokens < 64:
            raise ConfigError(f"max_prompt_tokens must be >= 64, got {self.max_prompt_tokens}")
        if len(self.valence_range) != 2 or not self.valence_range[0] < 0 < self.valence_range[1]:
            raise ConfigError(f"valence_range must be [low, high] with low < 0 < high, got {self.valence_range}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(f"max_failure_rate must be within [0, 1], got {self.max_failure_rate}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be within (0, 1], got {self.top_p}")
        if self.cache_rows < 1:
            raise ConfigError(f"cache_rows must be >= 1, got {self.cache_rows}")
        if self.cache_tokens < 0:
            raise ConfigError(f"cache_tokens must be >= 0 (0 = max_prompt_tokens + the largest answer budget), "
                              f"got {self.cache_tokens}")


@dataclass
class ScoreConfig:
    # Emotion-wheel folder; empty means the files shipped in scoring/emotion_wheel/.
    wheel_dir: str = ""
    # Label lists of the sentiment sets -> positive/negative/neutral: "rules" (scoring/valence.csv,
    # no LLM, the same answer every run) or "llm" (the extractor, as the reference asks Qwen2.5).
    sentiment: Literal["rules", "llm"] = "rules"
    # Outputs without the label template: "llm" (the extractor; refused without one) or "rules"
    # (the emotion words the wheels know, spotted in the text; reported as such).
    extract: Literal["llm", "rules"] = "llm"

    def validate(self) -> None:
        if self.sentiment not in ("rules", "llm"):
            raise ConfigError(f"sentiment must be rules or llm, got {self.sentiment!r}")
        if self.extract not in ("llm", "rules"):
            raise ConfigError(f"extract must be llm or rules, got {self.extract!r}")
