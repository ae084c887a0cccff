"""Typed training configuration, validated on construction, and the recipes that carry MLPerf hyperparameters.

Recipe names say model, GPUs and precision (Megatron-Bridge style); config.yaml picks one per workload and may override
fields (recipe < config.yaml < CLI). The resolved config is written beside the run's outputs.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.model.lora_layers import LoraSettings

WORKLOADS = ("lora", "pretrain", "sft")
RECOMPUTE = ("auto", "none", "selective", "full")


@dataclass(frozen=True)
class TrainConfig:
    workload: str                       # lora | pretrain | sft
    recipe: str
    # model: a converted megatron-core checkpoint (lora, sft) or random init of `model_shape` (pretrain)
    checkpoint: str = ""
    model_shape: dict[str, Any] = field(default_factory=dict)  # LlamaConfig fields for random init
    spec: str = "local"                 # local (CPU) | te (GPU)
    precision: str = "fp32"             # fp32 | bf16 | fp8
    # fp8 only (Transformer Engine): scaling recipe (delayed | tensorwise = current scaling), amax history length of
    # delayed scaling, and FP8 attention forward and backward (TE's fp8 dot-product attention, as NVIDIA's MLPerf
    # LoRA config runs)
    fp8_recipe: str = "delayed"
    fp8_amax_history_len: int = 1
    fp8_attention: bool = False
    rope_fusion: bool = True            # te spec: Transformer Engine's fused RoPE kernel (the local spec has none)
    # GPU, te spec: replay each transformer layer's forward and backward as CUDA graphs after a few eager steps
    # (train_cuda_graphs.py); needs the megatron optimizer, pipeline_parallel 1 and no activation recompute
    cuda_graphs: bool = False
    # te spec: the MLP through TE's operation-based API (megatron's TEFusedMLP); LoRA cannot target its linears
    te_op_fuser: bool = False
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    # sequence parallelism, on by default wherever tensor_parallel > 1 (set to false at tensor_parallel 1, where it
    # does not exist): norms, dropout and the activations between the TP regions split along the sequence over the
    # TP group (all-gather / reduce-scatter instead of all-reduce), as NVIDIA's MLPerf configs run TP
    sequence_parallel: bool = True
    # activation recompute: auto (from a memory estimate: none if it fits the GPU, then selective, then full; none on
    # CPU) | none | selective (attention core) | full (whole layers: the references' gradient checkpointing);
    # true / false mean full / none
    recompute_activations: str = "auto"
    random_base: bool = False           # LoRA on a randomly initialised `model_shape`: throughput runs only
    vocab_size: int = 0                 # > checkpoint's: grow embedding/output rows (HF resize_token_embeddings)
    vocab_from_tokenizer: str = ""      # tokenizer.json whose size sets vocab_size (e.g. with ChatML tokens added)
    # data
    train_data: tuple[str, ...] = ()    # lora/sft: one packed file; pretrain: .bin/.idx prefixes
    train_weights: tuple[float, ...] = ()
    validation_data: str = ""
    index_cache: str = ""               # pretraining: GPTDataset index cache folder (built by a CPU rule)
    seq_length: int = 8192
    global_batch_size: int = 8
    micro_batch_size: int = 1
    # optimizer and schedule
    lr: float = 4e-4
    min_lr: float = 0.0
    lr_schedule: str = "cosine"         # cosine (HF, no warmup) | cosine_warmup (Megatron)
    warmup_steps: int = 0
    weight_decay: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 0.3
    optimizer_impl: str = "auto"        # auto: megatron on GPU, torch on CPU | megatron (DDP + its optimizer) | torch
    distributed_optimizer: bool = True  # megatron path with DP > 1: shard Adam state and master weights over DP
    max_steps: int = 1024               # the schedule's length (LR decay; MLPerf's logged max_steps)
    step_budget: int = 0                # > 0: stop, aborted, after this many steps if the target is not reached
    # evaluation: every `eval_every_samples`, skipping the first `eval_skip` evaluations; stop at `target`
    eval_every_samples: int = 384
    eval_skip: int = -1                 # -1: the MLPerf formula of the workload
    eval_samples: int = 0               # 0: the whole validation set
    target: float = 0.925               # eval loss (lora) or log perplexity (pretrain) at or below which the run stops
    lora: LoraSettings | None = None
    seed: int = 1234
    # run control
    checkpoint_every_steps: int = 0     # 0: only on signals and at the end
    log_every_steps: int = 1
    benchmark_name: str = "llama2_70b_lora"

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> None:
            raise PipelineInputError(f"train config ({self.recipe}): {key} {why}")

        recompute = {True: "full", False: "none"}.get(self.recompute_activations, self.recompute_activations)  # type: ignore[call-overload]
        object.__setattr__(self, "recompute_activations", recompute)
        if self.recompute_activations not in RECOMPUTE:
            bad("recompute_activations", f"must be one of {RECOMPUTE} or true/false, got {self.recompute_activations!r}")
        if self.workload not in WORKLOADS:
            bad("workload", f"must be one of {WORKLOADS}, got {self.workload!r}")
        if self.spec not in ("local", "te"):
            bad("spec", f"must be 'local' or 'te', got {self.spec!r}")
        if self.precision not in ("fp32", "bf16", "fp8"):
            bad("precision", f"must be fp32, bf16 or fp8, got {self.precision!r}")
        for key in ("tensor_parallel", "pipeline_parallel", "seq_length", "global_batch_size", "micro_batch_size",
                    "max_steps", "eval_every_samples"):
            if getattr(self, key) < 1:
                bad(key, f"must be >= 1, got {getattr(self, key)}")
        if self.tensor_parallel == 1:
            object.__setattr__(self, "sequence_parallel", False)  # the resolved config shows what runs
        if self.sequence_parallel and self.seq_length % self.tensor_parallel:
            bad("seq_length", f"{self.seq_length} must be a multiple of tensor_parallel {self.tensor_parallel} with "
                "sequence_parallel")
        if self.global_batch_size % self.micro_batch_size:
            bad("global_batch_size", f"{self.global_batch_size} is not a multiple of micro_batch_size {self.micro_batch_size}")
        for key in ("lr", "min_lr", "weight_decay", "clip_grad", "adam_eps"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0 or (key == "lr" and value == 0):
                bad(key, f"must be a finite number {'> 0' if key == 'lr' else '>= 0'}, got {value}")
        if self.fp8_recipe not in ("delayed", "tensorwise"):
            bad("fp8_recipe", f"must be 'delayed' or 'tensorwise', got {self.fp8_recipe!r}")
        if self.fp8_amax_history_len < 1:
            bad("fp8_amax_history_len", f"must be >= 1, got {self.fp8_amax_history_len}")
        if self.optimizer_impl not in ("auto", "megatron", "torch"):
            bad("optimizer_impl", f"must be 'auto', 'megatron' or 'torch', got {self.optimizer_impl!r}")
        if self.lr_schedule not in ("cosine", "cosine_warmup"):
            bad("lr_schedule", f"must be 'cosine' or 'cosine_warmup', got {self.lr_schedule!r}")
        if self.workload in ("lora", "sft") and self.lora is None:
            bad("lora", "is required for LoRA workloads")
        if self.workload in ("lora", "sft") and not self.checkpoint and not self.random_base:
            bad("checkpoint", "is required: LoRA starts from a converted checkpoint")
        if self.random_base and not self.model_shape:
            bad("model_shape", "is required with random_base")
        if self.workload == "pretrain" and not self.checkpoint and not self.model_shape:
            bad("model_shape", "is required for random initialisation")
        if self.te_op_fuser and self.spec != "te":
            bad("te_op_fuser", f"needs spec te, got {self.spec!r}")
        if self.te_op_fuser and self.lora and {"linear_fc1", "linear_fc2"} & set(self.lora.targets):
            bad("te_op_fuser", "fuses the MLP's linears, which LoRA targets here (lora.targets)")
        if self.train_weights and len(self.train_weights) != len(self.train_data):
            bad("train_weights", "must have one weight per train_data entry")

    @property
    def last_step(self) -> int:
        """The step at which the run stops without reaching its target: max_steps, or an earlier step budget (a demo
        on the real schedule, whose max_steps of 1,200,000 no CPU run reaches)."""
        return min(self.max_steps, self.step_budget) if self.step_budget > 0 else self.max_steps

    @property
    def skipped_evals(self) -> int:
        if self.eval_skip >= 0:
            return self.eval_skip
        if self.workload == "lora":
            return math.floor(0.125 * self.global_batch_size + 2)
        if self.workload == "pretrain":
            return math.floor(0.0026 * self.global_batch_size + 12) - 1  # reference code: first eval after this many
        return 0

    def resolved(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["skipped_evals"] = self.skipped_evals
        return out


def _lora(**kw: Any) -> LoraSettings:
    return LoraSettings(**kw)


def _lora_settings(values: dict[str, Any]) -> LoraSettings:
    """`lora:` from a config: every sub-key known and of its type, named when not (before any model is built)."""
    kinds = {"rank": int, "alpha": float, "dropout": float, "targets": tuple}
    if unknown := sorted(set(values) - set(kinds)):
        raise PipelineInputError(f"unknown train config key(s) lora.{unknown}; known: {sorted(kinds)}")
    out: dict[str, Any] = {}
    for key, value in values.items():
        kind = kinds[key]
        try:
            if kind is tuple:
                if isinstance(value, str) or not isinstance(value, (list, tuple)):
                    raise TypeError
                out[key] = tuple(value)
            elif isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
                raise TypeError
            else:
                out[key] = kind(value)
        except (TypeError, ValueError) as err:
            raise PipelineInputError(f"train config key lora.{key}: {value!r} is not {'a list' if kind is tuple else 'a number'}") from err
    return LoraSettings(**out)


# ---- recipes -------------------------------------------------------------------------------------------------------

def llama2_70b_lora_8xh100_fp8(**overrides: Any) -> TrainConfig:
    """MLPerf llama2_70b_lora reference hyperparameters (mlperf-spec §1.7), TE spec, fp8 with FP8 attention (as
    NVIDIA's MLPerf config; +2.6% on the 7B shape, docs/performance.md), TP 4 with sequence parallelism on 8 H100s;
    recompute from memory."""
    base = dict(workload="lora", recipe="llama2_70b_lora_8xh100_fp8", spec="te", precision="fp8", fp8_attention=True,
                tensor_parallel=4, recompute_activations="auto", seq_length=8192, global_batch_size=8, micro_batch_size=1, lr=4e-4,
                lr_schedule="cosine", weight_decay=1e-4, adam_beta2=0.999, adam_eps=1e-8, clip_grad=0.3,
                max_steps=1024, eval_every_samples=384, target=0.925,
                lora=_lora(rank=16, alpha=32, dropout=0.1, targets=("linear_qkv", "linear_proj")))
    return TrainConfig(**{**base, **overrides})


LLAMA2_7B_SHAPE = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
                       num_attention_heads=32, num_query_groups=32, head_dim=128, max_position_embeddings=8192)


def llama2_7b_lora_1xh100_bf16(**overrides: Any) -> TrainConfig:
    """The LoRA protocol on a Llama-2-7B-shaped model on one H100 (GPU smoke run)."""
    return llama2_70b_lora_8xh100_fp8(**{"recipe": "llama2_7b_lora_1xh100_bf16", "precision": "bf16",
                                         "tensor_parallel": 1, "model_shape": LLAMA2_7B_SHAPE, **overrides})


def llama31_405b_pretrain_2304xh100_bf16(**overrides: Any) -> TrainConfig:
    """MLPerf llama31_405b reference (mlperf-spec §2.5-2.7): GBS 1152, LR 8e-5 cosine with linear warmup.
    TP 8 x PP 9 as NeMo's recipe (14 layers per stage); its CP 4 and virtual pipeline 7 are not implemented here, so
    2304 GPUs give DP 32 (36 micro-batches per step) instead of the reference's DP 8."""
    from workflow_scripts.train.schedules import llama31_pretrain_schedule

    sched = llama31_pretrain_schedule(overrides.get("global_batch_size", 1152))
    base = dict(workload="pretrain", recipe="llama31_405b_pretrain_2304xh100_bf16", spec="te", precision="bf16",
                tensor_parallel=8, pipeline_parallel=9, seq_length=8192, global_batch_size=sched.global_batch_size,
                lr=sched.max_lr,
                min_lr=sched.min_lr, lr_schedule="cosine_warmup", warmup_steps=sched.warmup_steps,
                max_steps=sched.max_steps, weight_decay=0.1, adam_beta2=0.95, adam_eps=1e-5, clip_grad=1.0,
                eval_every_samples=18432, eval_samples=5760, target=5.6, benchmark_name="llama31_405b",
                model_shape=dict(vocab_size=32768, hidden_size=16384, intermediate_size=53248, num_layers=126,
                                 num_attention_heads=128, num_query_groups=8, head_dim=128, rope_theta=500000.0,
                                 max_position_embeddings=8192))
    return TrainConfig(**{**base, **overrides})


# Llama 3.1 8B (mlperf-spec §2.5 Llama31Config8B): the Llama 3.1 tokenizer's 128,256 rows, RoPE theta 500,000 with
# Llama 3 scaling (factor 8, low/high frequency factors 1/4, original context 8192).
LLAMA31_8B_SHAPE = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
                        num_attention_heads=32, num_query_groups=8, head_dim=128, rope_theta=500000.0,
                        rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192),
                        max_position_embeddings=8192)
# MLPerf llama31_8b (rulesets 5.1.0 and 6.0.0, closed_llama31_8b.yaml): the checked values.
LLAMA31_8B_RULES = dict(seq_length=8192, max_steps=1_200_000, adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-5,
                        weight_decay=0.1, clip_grad=1.0, lr_schedule="cosine_warmup", target=3.3,
                        benchmark_name="llama31_8b")


def llama31_8b_pretrain_8xh100_bf16(**overrides: Any) -> TrainConfig:
    """MLPerf llama31_8b on one node of 8 H100s: random init, the rules' values (LLAMA31_8B_RULES: sequence 8192, AdamW
    0.9/0.95/1e-5, weight decay 0.1, clip 1.0, cosine with linear warmup over max_steps 1,200,000, log perplexity
    3.3) and the reference convergence point's hyperparameters at GBS 32 (rcps_llama31_8b.json llama31_8b_ref_32:
    LR 8e-4, 4,096 warmup samples = 128 steps; end LR 0.1 x peak, NeMo's default, not checked). Evaluation on 1,024
    sequences every 12,288 samples from the start (mlcommons/training small_llm_pretraining: EVAL_EVERY 12288,
    START_EVAL_AT 0). TP 1 x DP 8 with the distributed optimizer; recompute chosen from memory."""
    base = dict(workload="pretrain", recipe="llama31_8b_pretrain_8xh100_bf16", spec="te", precision="bf16",
                tensor_parallel=1, recompute_activations="auto", global_batch_size=32, micro_batch_size=1, lr=8e-4,
                min_lr=8e-5, warmup_steps=4096 // 32, eval_every_samples=12288, eval_skip=0, eval_samples=1024,
                model_shape=LLAMA31_8B_SHAPE, **LLAMA31_8B_RULES)
    return TrainConfig(**{**base, **overrides})


def llama31_8b_pretrain_8xh100_fp8(**overrides: Any) -> TrainConfig:
    """The bf16 recipe in fp8 (delayed scaling) with FP8 attention, as the fp8 LoRA recipe."""
    return llama31_8b_pretrain_8xh100_bf16(**{"recipe": "llama31_8b_pretrain_8xh100_fp8", "precision": "fp8",
                                              "fp8_attention": True, **overrides})


def llama2_70b_sft_8xh100_bf16(**overrides: Any) -> TrainConfig:
    """DGXC hf-llama2 recipe (mlperf-spec §5): LoRA r 8, alpha 16 on all projections, 2048-token packs, 30 steps of
    8 per device x 4 accumulation on 8 GPUs = 256 samples per step (train_samples_per_second counts those)."""
    base = dict(workload="sft", recipe="llama2_70b_sft_8xh100_bf16", spec="te", precision="bf16", tensor_parallel=8,
                seq_length=2048, global_batch_size=8 * 4 * 8, micro_batch_size=8, lr=1e-4, lr_schedule="cosine",
                weight_decay=1e-4, clip_grad=1.0, max_steps=30, eval_every_samples=30 * 8 * 4 * 8, eval_skip=0,
                target=0.0, seed=100,
                benchmark_name="sft_throughput",
                lora=_lora(rank=8, alpha=16, dropout=0.1,
                           targets=("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")))
    return TrainConfig(**{**base, **overrides})


def demo_lora_cpu(**overrides: Any) -> TrainConfig:
    """The real LoRA protocol (r 16, alpha 32, dropout 0.1, GBS 8, clip 0.3, wd 1e-4, eval every 384 samples after 3
    skipped, target 0.925) on the demo model. The rules leave the learning rate free (mlperf-spec §1.7): 4e-3 here, as
    the tiny demo model at 4e-4 improves too slowly (1.431 -> 1.416 between evaluations, measured). Micro-batches of
    4 rows (the loss is still the mean of per-row means, as with the reference's one row): +16% tokens/s on 2 cores."""
    return llama2_70b_lora_8xh100_fp8(**{"recipe": "demo_lora_cpu", "spec": "local", "precision": "fp32",
                                         "tensor_parallel": 1, "seq_length": 512, "micro_batch_size": 4,
                                         "lr": 4e-3, **overrides})


def demo_pretrain_cpu(**overrides: Any) -> TrainConfig:
    """llama31_8b scaled down to a CPU (the demo C4 shards, en_6 and en_7 blend): random init, a tiny Llama 3.1
    (GQA, RoPE theta 500,000 with Llama 3 scaling), the rules' optimizer, schedule (max_steps 1,200,000) and target
    (log perplexity 3.3); sequence 256, 64 evaluation sequences and a budget of 400 steps instead of the real
    8,192, 1,024 and 1,200,000 (one evaluation at the real size alone takes ~5 minutes on two CPU cores)."""
    base = dict(workload="pretrain", recipe="demo_pretrain_cpu", spec="local", precision="fp32",
                global_batch_size=8, micro_batch_size=4, lr=2e-3, min_lr=2e-4, warmup_steps=10, step_budget=400,
                eval_every_samples=320, eval_skip=0, eval_samples=64,
                **{**LLAMA31_8B_RULES, "seq_length": 256},
                model_shape=dict(vocab_size=2048, hidden_size=128, intermediate_size=352, num_layers=2,
                                 num_attention_heads=4, num_query_groups=2, head_dim=32, rope_theta=500000.0,
                                 rope_scaling=dict(LLAMA31_8B_SHAPE["rope_scaling"]), max_position_embeddings=256))
    return TrainConfig(**{**base, **overrides})


def demo_base_cpu(**overrides: Any) -> TrainConfig:
    """The demo's stand-in for a pretrained Llama 2: a tiny Llama trained as a language model on the packed demo
    GovReport train rows (all tokens count), then exported to HF. A random tiny model cannot reach the LoRA target:
    its frozen random output layer caps every logit (the LoRA demo stalls at a loss near log(vocab)). One evaluation,
    at the end (it has no target; the rule's steps are demo.base_model_steps)."""
    base = dict(workload="pretrain", recipe="demo_base_cpu", spec="local", precision="fp32", seq_length=512,
                global_batch_size=8, micro_batch_size=4, lr=4e-3, min_lr=3e-4, lr_schedule="cosine_warmup",
                warmup_steps=10, max_steps=150, weight_decay=0.1, adam_beta2=0.95, adam_eps=1e-5, clip_grad=1.0,
                eval_every_samples=150 * 8, eval_skip=0, eval_samples=173, target=0.0, benchmark_name="demo_base",
                model_shape=dict(vocab_size=2048, hidden_size=64, intermediate_size=160, num_layers=2,
                                 num_attention_heads=4, num_query_groups=2, head_dim=16, max_position_embeddings=512))
    return TrainConfig(**{**base, **overrides})


def demo_sft_cpu(**overrides: Any) -> TrainConfig:
    """SFT throughput protocol (LoRA r 8 on all projections) on the demo model and packed demo UltraChat."""
    return llama2_70b_sft_8xh100_bf16(**{"recipe": "demo_sft_cpu", "spec": "local", "precision": "fp32",
                                         "tensor_parallel": 1, "seq_length": 256, "global_batch_size": 8,
                                         "micro_batch_size": 4, "max_steps": 30, "eval_every_samples": 30 * 8,
                                         "eval_samples": 32, **overrides})


RECIPES: dict[str, Callable[..., TrainConfig]] = {
    f.__name__: f for f in (llama2_70b_lora_8xh100_fp8, llama2_7b_lora_1xh100_bf16,
                            llama31_405b_pretrain_2304xh100_bf16, llama31_8b_pretrain_8xh100_bf16,
                            llama31_8b_pretrain_8xh100_fp8, llama2_70b_sft_8xh100_bf16,
                            demo_lora_cpu, demo_pretrain_cpu, demo_sft_cpu, demo_base_cpu)
}


def build_config(recipe: str, overrides: dict[str, Any]) -> TrainConfig:
    """Recipe defaults, then `overrides` (from config.yaml / CLI); unknown keys are refused by name."""
    if recipe not in RECIPES:
        raise PipelineInputError(f"unknown recipe {recipe!r}; known: {sorted(RECIPES)}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise PipelineInputError(f"unknown train config key(s) {unknown} for recipe {recipe}")
    overrides = dict(overrides)
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for key, value in list(overrides.items()):
        if types[key] in ("float", "int") and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            try:  # YAML 1.1 reads 3e-4 as a string
                overrides[key] = float(value) if types[key] == "float" else int(value)
            except ValueError as err:
                raise PipelineInputError(f"train config key {key}: {value!r} is not a number") from err
    if isinstance(overrides.get("lora"), dict):
        overrides["lora"] = _lora_settings(overrides["lora"])
    if isinstance(overrides.get("model_shape"), dict):
        from workflow_scripts.model.llama_model import LlamaConfig

        shape_keys = {f.name for f in dataclasses.fields(LlamaConfig)}
        if unknown := sorted(set(overrides["model_shape"]) - shape_keys):
            raise PipelineInputError(f"unknown train config key(s) model_shape.{unknown} for recipe {recipe}; "
                                     f"known: {sorted(shape_keys)}")
    for key in ("train_data", "train_weights"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    return RECIPES[recipe](**overrides)
