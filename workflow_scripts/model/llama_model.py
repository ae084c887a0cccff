"""Llama model config (read from a Hugging Face config.json) and the megatron-core GPTModel built from it.

Shared by checkpoint conversion, its parity check and training: one typed config, one builder, one way to set up
torch.distributed + megatron parallel state (gloo on CPU, NCCL on GPU; parallel_setup.py, re-exported here).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.lfs_pointer import refuse_lfs_pointer
# re-exported: conversion, generation and training import them from here
from workflow_scripts.model.parallel_setup import init_parallel, shutdown_parallel  # noqa: F401

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama 3 ("llama3") RoPE frequency scaling."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_query_groups: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 4096
    make_vocab_size_divisible_by: int = 128
    torch_dtype: str = "float32"
    # Megatron pads the embedding/output rows to a multiple of make_vocab_size_divisible_by * TP.
    padded_vocab_size: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_attention_heads",
                     "num_query_groups", "head_dim", "make_vocab_size_divisible_by"):
            if getattr(self, name) < 1:
                raise PipelineInputError(f"model config: {name} must be >= 1, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_query_groups:
            raise PipelineInputError(
                f"model config: num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_query_groups}")
        if self.torch_dtype not in DTYPES:
            raise PipelineInputError(f"model config: torch_dtype {self.torch_dtype!r} is not one of {sorted(DTYPES)}")
        if self.padded_vocab_size and self.padded_vocab_size < self.vocab_size:
            raise PipelineInputError("model config: padded_vocab_size is smaller than vocab_size")

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_query_groups

    @property
    def qkv_rows(self) -> int:
        return (self.num_attention_heads + 2 * self.num_query_groups) * self.head_dim

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.torch_dtype]

    def with_padding(self, tp: int) -> "LlamaConfig":
        multiple = self.make_vocab_size_divisible_by * tp
        return dataclasses.replace(self, padded_vocab_size=math.ceil(self.vocab_size / multiple) * multiple)

    def check_parallel(self, tp: int, pp: int) -> None:
        """TP splits whole query groups (and heads); PP splits whole layers."""
        if tp < 1 or pp < 1:
            raise PipelineInputError(f"--tp/--pp must be >= 1, got tp={tp} pp={pp}")
        if self.num_query_groups % tp:
            raise PipelineInputError(
                f"tp={tp} does not divide num_key_value_heads={self.num_query_groups} (config.json)")
        if self.num_attention_heads % tp:
            raise PipelineInputError(
                f"tp={tp} does not divide num_attention_heads={self.num_attention_heads} (config.json)")
        if self.intermediate_size % tp:
            raise PipelineInputError(f"tp={tp} does not divide intermediate_size={self.intermediate_size} (config.json)")
        if self.num_layers % pp:
            raise PipelineInputError(f"pp={pp} does not divide num_hidden_layers={self.num_layers} (config.json)")
        padded = self.padded_vocab_size or self.vocab_size
        if padded % tp:
            raise PipelineInputError(f"tp={tp} does not divide the padded vocabulary size {padded}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LlamaConfig":
        data = dict(data)
        if data.get("rope_scaling"):
            data["rope_scaling"] = RopeScaling(**data["rope_scaling"])
        return cls(**data)


_REQUIRED = object()
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
               list: "a list"}


def _is_kind(value: Any, kind: type) -> bool:
    if kind in (int, float) and isinstance(value, bool):  # JSON true is not a number
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _hf_value(hf: dict[str, Any], key: str, path: Path, kind: type, default: Any = _REQUIRED, minimum: int | None = None,
              prefix: str = "") -> Any:
    """hf[key] if it has the JSON type `kind` (a number may be an integer); absent or null gives `default`, or fails
    naming the file and the key when there is none. Unchecked, a "8" fails later in arithmetic, naming neither."""
    value = hf.get(key)
    if value is None:
        if default is _REQUIRED:
            state = "missing" if key not in hf else "null"
            raise PipelineInputError(f"{path}: key {prefix + key!r} is {state}, expected {_KIND_NAMES[kind]}")
        return default
    if not _is_kind(value, kind):
        raise PipelineInputError(f"{path}: key {prefix + key!r} is {json.dumps(value)} ({type(value).__name__}), "
                                 f"expected {_KIND_NAMES[kind]}")
    if minimum is not None and value < minimum:
        raise PipelineInputError(f"{path}: key {prefix + key!r} is {value}, expected an integer >= {minimum}")
    return float(value) if kind is float else value


def _rope_scaling(hf: dict[str, Any], path: Path) -> RopeScaling | None:
    scaling = _hf_value(hf, "rope_scaling", path, dict, None)
    if not scaling:
        return None
    kind = _hf_value(scaling, "rope_type", path, str, None, prefix="rope_scaling.")
    kind = kind or _hf_value(scaling, "type", path, str, None, prefix="rope_scaling.")
    if kind != "llama3":
        raise PipelineInputError(f"{path}: rope_scaling type {kind!r} is not supported (only 'llama3')")
    values = {f.name: _hf_value(scaling, f.name, path, type(f.default), f.default, prefix="rope_scaling.")
              for f in dataclasses.fields(RopeScaling)}
    return RopeScaling(**values)


def _check_supported(hf: dict[str, Any], path: Path) -> None:
    """Refuse what the converter cannot represent, naming the key."""
    archs = _hf_value(hf, "architectures", path, list, ["LlamaForCausalLM"])
    model_type = _hf_value(hf, "model_type", path, str, "llama")
    if model_type != "llama" or any(a not in SUPPORTED_ARCHITECTURES for a in archs):
        raise PipelineInputError(
            f"{path}: unsupported architecture {archs} / model_type {hf.get('model_type')!r} "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    if _hf_value(hf, "tie_word_embeddings", path, bool, False):
        raise PipelineInputError(f"{path}: tie_word_embeddings=true is not supported (Llama 2/3 >= 7B are untied)")
    if _hf_value(hf, "hidden_act", path, str, "silu") != "silu":
        raise PipelineInputError(f"{path}: hidden_act {hf['hidden_act']!r} is not supported (only silu/SwiGLU)")
    for key in ("attention_bias", "mlp_bias"):
        if _hf_value(hf, key, path, bool, False):
            raise PipelineInputError(f"{path}: {key}=true is not supported")


def config_from_hf(hf: dict[str, Any], path: Path | str = "config.json", make_vocab_size_divisible_by: int = 128) -> LlamaConfig:
    """Read a Llama config.json dict; a wrong-typed, missing or unsupported value fails naming the file and the key."""
    path = Path(path)
    if not isinstance(hf, dict):
        raise PipelineInputError(f"{path}: expected a JSON object")
    _check_supported(hf, path)

    def size(key: str, default: Any = _REQUIRED) -> int:
        return _hf_value(hf, key, path, int, default, minimum=1)

    heads, hidden = size("num_attention_heads"), size("hidden_size")
    dtype = _hf_value(hf, "torch_dtype", path, str, None) or _hf_value(hf, "dtype", path, str, "float32")
    fields = dict(
        vocab_size=size("vocab_size"),
        hidden_size=hidden,
        intermediate_size=size("intermediate_size"),
        num_layers=size("num_hidden_layers"),
        num_attention_heads=heads,
        num_query_groups=size("num_key_value_heads", heads),
        head_dim=size("head_dim", hidden // heads),
        rms_norm_eps=_hf_value(hf, "rms_norm_eps", path, float, 1e-5),
        rope_theta=_hf_value(hf, "rope_theta", path, float, 10000.0),
        rope_scaling=_rope_scaling(hf, path),
        max_position_embeddings=size("max_position_embeddings", 4096),
        make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        torch_dtype=dtype.removeprefix("torch."),
    )
    try:
        return LlamaConfig(**fields)
    except PipelineInputError as err:  # the config's own checks (GQA divisibility, dtype) name no file
        raise PipelineInputError(f"{path}: {err}") from None


def load_hf_config(hf_dir: Path | str, make_vocab_size_divisible_by: int = 128) -> LlamaConfig:
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise PipelineInputError(f"{path}: not found (an HF checkpoint folder holds config.json)")
    refuse_lfs_pointer(path)
    try:
        data = json.loads(path.read_bytes())
    except UnicodeDecodeError as err:
        raise PipelineInputError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise PipelineInputError(f"{path}: line {err.lineno} column {err.colno}: {err.msg}") from err
    return config_from_hf(data, path, make_vocab_size_divisible_by)


def hf_config_dict(cfg: LlamaConfig) -> dict[str, Any]:
    """The config.json of an HF LlamaForCausalLM with this shape (used by mcore -> HF and the demo model)."""
    out: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_query_groups,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": cfg.torch_dtype,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if cfg.rope_scaling:
        out["rope_scaling"] = {"rope_type": "llama3", **dataclasses.asdict(cfg.rope_scaling)}
    return out


def rope_inv_freq(cfg: LlamaConfig) -> torch.Tensor:
    """RoPE inverse frequencies exactly as HF Llama computes them (incl. Llama 3 scaling with its own factors)."""
    dim = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    s = cfg.rope_scaling
    if s is None:
        return inv
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / s.factor, inv)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def transformer_config(cfg: LlamaConfig, tp: int = 1, pp: int = 1, params_dtype: torch.dtype | None = None, **overrides: Any):
    """megatron TransformerConfig for this Llama: RMSNorm, SwiGLU, no biases, fusions off on CPU."""
    import torch.nn.functional as F
    from megatron.core.transformer.transformer_config import TransformerConfig

    on_gpu = torch.cuda.is_available()
    dtype = params_dtype or cfg.dtype
    kwargs: dict[str, Any] = dict(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        ffn_hidden_size=cfg.intermediate_size,
        num_attention_heads=cfg.num_attention_heads,
        num_query_groups=cfg.num_query_groups,
        kv_channels=cfg.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=cfg.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        params_dtype=dtype,
        pipeline_dtype=dtype,  # dtype of the activations sent between pipeline stages
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu_initialization=not on_gpu,
        bias_activation_fusion=on_gpu,
        masked_softmax_fusion=on_gpu,
        bias_dropout_fusion=on_gpu,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
    )
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)


def layer_spec(spec: str, te_op_fuser: bool = False):
    """'local' = megatron-core's own modules (CPU); 'te' = Transformer Engine (GPU). `te_op_fuser`: the te spec's
    MLP as TE's operation-based API (megatron's TEFusedMLP: norm, fc1, SwiGLU and fc2 as one fusible sequence)."""
    from megatron.core.models.gpt import gpt_layer_specs

    if spec == "local":
        from workflow_scripts.model.local_norm import LocalRMSNorm
        from workflow_scripts.model.sdpa_attention import SdpaDotProductAttention

        local = gpt_layer_specs.get_gpt_layer_local_spec(normalization="RMSNorm")
        local.submodules.self_attention.submodules.core_attention = SdpaDotProductAttention
        local.submodules.input_layernorm = local.submodules.pre_mlp_layernorm = LocalRMSNorm
        return local
    if spec == "te":
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(use_te_op_fuser=te_op_fuser)
    raise PipelineInputError(f"spec must be 'te' or 'local', got {spec!r}")


def block_spec(spec: str, config, te_op_fuser: bool = False):
    """The decoder of this pipeline stage: `layer_spec` for each of its layers and, for the local spec, a final norm
    that runs under sequence parallelism (megatron would pick WrappedTorchNorm, which refuses it)."""
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

    layer = layer_spec(spec, te_op_fuser)
    if spec != "local":
        return layer
    from workflow_scripts.model.local_norm import LocalRMSNorm

    return TransformerBlockSubmodules(layer_specs=[layer] * get_num_layers_to_build(config), layer_norm=LocalRMSNorm)


def build_gpt_model(cfg: LlamaConfig, spec: str = "local", params_dtype: torch.dtype | None = None,
                    parallel_output: bool = True, te_op_fuser: bool = False, **config_overrides: Any):
    """The GPTModel of this pipeline stage (parallel state must be initialized, see init_parallel).

    `parallel_output=False` gathers the vocabulary-sharded logits (for evaluation / parity checks).
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    if not cfg.padded_vocab_size:
        raise PipelineInputError("model config: padded_vocab_size is unset (call with_padding(tp) first)")
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    cfg.check_parallel(tp, pp)
    if spec == "local":  # the local attention's fused softmax needs Megatron-LM's compiled kernel (not in the wheel)
        config_overrides.setdefault("masked_softmax_fusion", False)
    config = transformer_config(cfg, tp, pp, params_dtype, **config_overrides)
    model = GPTModel(
        config=config,
        transformer_layer_spec=block_spec(spec, config, te_op_fuser),
        vocab_size=cfg.padded_vocab_size,
        max_sequence_length=cfg.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=parallel_output,
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_base=int(cfg.rope_theta),
        rope_scaling=cfg.rope_scaling is not None,
        rope_scaling_factor=cfg.rope_scaling.factor if cfg.rope_scaling else 8.0,
    )
    # megatron's Llama 3 scaling hard-codes low/high factors 1/4 and 8192 positions and takes an integer theta;
    # set the frequencies HF uses so any config.json is reproduced exactly.
    rope = model.rotary_pos_emb
    rope.inv_freq = rope_inv_freq(cfg).to(rope.inv_freq.device)
    if torch.cuda.is_available():
        model.cuda()  # the local spec creates its norms on the CPU
    return model
