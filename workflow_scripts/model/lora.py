"""LoRA adapter files of this pipeline and their merge into base weights.

Format (a folder):
- `adapter_config.json`: {"r": 16, "alpha": 32.0, "target_modules": ["linear_qkv", "linear_proj"]}
  (targets among linear_qkv, linear_proj, linear_fc1, linear_fc2);
- `adapter_model.safetensors`: for every layer l and target t, `decoder.layers.{l}.<module of t>.lora_A.weight`
  [r, in_features] and `.lora_B.weight` [out_features, r], in megatron's *global* layout (linear_qkv output rows
  grouped per query group, linear_fc1 rows [gate; up]), so a TP-sharded trainer saves them like the base weights.
The adapted layer computes W x + (alpha / r) B A x; merging adds (alpha / r) B A to W (in fp32, cast back).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import safe_open

from workflow_scripts.convert import mcore_layout as L
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.model.llama_model import LlamaConfig

TARGETS = {
    "linear_qkv": ("self_attention.linear_qkv", L.QKV),
    "linear_proj": ("self_attention.linear_proj", L.PROJ),
    "linear_fc1": ("mlp.linear_fc1", L.FC1),
    "linear_fc2": ("mlp.linear_fc2", L.FC2),
}
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


def adapter_key(layer: int, target: str, part: str) -> str:
    return f"decoder.layers.{layer}.{TARGETS[target][0]}.{part}.weight"


@dataclasses.dataclass
class LoraAdapter:
    r: int
    alpha: float
    target_modules: tuple[str, ...]
    weights: dict[str, torch.Tensor]

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    @classmethod
    def load(cls, lora_dir: Path | str, cfg: LlamaConfig) -> "LoraAdapter":
        lora_dir = Path(lora_dir)
        cfg_path = lora_dir / CONFIG
        if not cfg_path.is_file():
            raise PipelineInputError(f"{cfg_path}: not found (a LoRA folder holds {CONFIG} and {WEIGHTS})")
        meta = json.loads(cfg_path.read_text())
        for key in ("r", "alpha", "target_modules"):
            if key not in meta:
                raise PipelineInputError(f"{cfg_path}: missing key {key!r}")
        bad = [t for t in meta["target_modules"] if t not in TARGETS]
        if bad:
            raise PipelineInputError(f"{cfg_path}: target_modules {bad} not among {sorted(TARGETS)}")
        shapes = L.mcore_shapes(cfg)
        weights: dict[str, torch.Tensor] = {}
        with safe_open(str(lora_dir / WEIGHTS), framework="pt") as handle:
            names = set(handle.keys())
            for layer in range(cfg.num_layers):
                for target in meta["target_modules"]:
                    out_f, in_f = shapes[TARGETS[target][1]][1:]
                    for part, shape in (("lora_A", (meta["r"], in_f)), ("lora_B", (out_f, meta["r"]))):
                        key = adapter_key(layer, target, part)
                        if key not in names:
                            raise PipelineInputError(f"{lora_dir / WEIGHTS}: tensor {key!r} is missing")
                        tensor = handle.get_tensor(key)
                        if tuple(tensor.shape) != shape:
                            raise PipelineInputError(
                                f"{lora_dir / WEIGHTS}: tensor {key!r} has shape {tuple(tensor.shape)}, expected {shape}")
                        weights[key] = tensor
        return cls(int(meta["r"]), float(meta["alpha"]), tuple(meta["target_modules"]), weights)

    def delta(self, target: str, layer: int) -> torch.Tensor:
        a = self.weights[adapter_key(layer, target, "lora_A")].float()
        b = self.weights[adapter_key(layer, target, "lora_B")].float()
        return self.scale * (b @ a)

    def merge(self, mcore_key: str, layer: int, weight: torch.Tensor) -> torch.Tensor:
        """`weight` (one layer of `mcore_key`) plus this adapter's update, if the adapter targets it."""
        for target in self.target_modules:
            if TARGETS[target][1] == mcore_key:
                return (weight.float() + self.delta(target, layer)).to(weight.dtype)
        return weight
