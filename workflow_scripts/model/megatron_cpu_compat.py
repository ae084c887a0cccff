"""Every patch that megatron-core 0.16.1 needs to run on a CPU-only torch build, in one place.

Each patch fixes one call that fails with "Torch not compiled with CUDA enabled" (see
shared notes megatron-core-on-cpu.md). `apply()` installs them only when CUDA is absent and returns their names;
tests/test_megatron_cpu_compat.py lists them, so a megatron-core bump that makes one unnecessary (the patched
code no longer touches CUDA) or insufficient (a new CUDA call) shows up as a failing test.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import types
from typing import Any, Callable, Iterator

import torch

PATCH_NAMES = (
    "rope_inv_freq_device",
    "global_memory_buffer_device",
    "rng_tracker_cpu",
    "checkpoint_writer_synchronize",
    "checkpoint_finalize_device",
    "tp_collectives_device",
    "pipeline_p2p_device",
    "pipeline_schedule_token_count",
    "sequence_parallel_dgrad_device",
)

_applied: list[str] = []


class _CpuCuda:
    """Stands in for `torch.cuda` inside patched megatron code: device placement lands on the CPU."""

    @staticmethod
    def current_device() -> torch.device:
        return torch.device("cpu")

    @staticmethod
    def synchronize(*_args: Any, **_kwargs: Any) -> None:
        return None

    @staticmethod
    def is_available() -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cuda, name)


def _on_cpu(factory: Callable) -> Callable:
    def create(*args: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
        if device is not None and torch.device(device).type == "cuda":
            device = "cpu"
        return factory(*args, device=device, **kwargs)

    return create


class _CpuTorch(types.ModuleType):
    """`torch` as seen by a patched megatron module: everything is torch except `torch.cuda`, and tensors created
    with a literal device="cuda" land on the CPU."""

    cuda = _CpuCuda()
    zeros = staticmethod(_on_cpu(torch.zeros))
    empty = staticmethod(_on_cpu(torch.empty))
    ones = staticmethod(_on_cpu(torch.ones))
    tensor = staticmethod(_on_cpu(torch.tensor))

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


_CPU_TORCH = _CpuTorch()


def _with_cpu_torch(func: Callable) -> Callable:
    """The same code as `func`, but its global `torch` is the CPU stand-in (the rest of its module is untouched)."""
    namespace = dict(func.__globals__, torch=_CPU_TORCH)
    clone = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__)
    clone.__kwdefaults__, clone.__doc__, clone.__qualname__ = func.__kwdefaults__, func.__doc__, func.__qualname__
    clone.__wrapped__ = func  # type: ignore[attr-defined]
    clone._cpu_compat_patch = True  # type: ignore[attr-defined]
    return clone


def _patch_rope() -> None:
    # RotaryEmbedding.get_emb moves inv_freq to torch.cuda.current_device() on the first forward.
    from megatron.core.models.common.embeddings import rotary_pos_embedding as rope

    rope.RotaryEmbedding.get_emb = _with_cpu_torch(rope.RotaryEmbedding.get_emb)


def _patch_memory_buffer() -> None:
    # The local DotProductAttention takes its scratch tensor from a buffer allocated on the CUDA device.
    from megatron.core import utils

    utils.GlobalMemoryBuffer.get_tensor = _with_cpu_torch(utils.GlobalMemoryBuffer.get_tensor)


class CpuRNGStatesTracker:
    """Named RNG states (data-parallel, tensor-parallel, expert) kept as CPU generator states.

    Same interface as megatron's CudaRNGStatesTracker (add / fork / get_states / set_states / reset); megatron's
    `model_parallel_cuda_manual_seed` fills it unchanged once it is installed as the global tracker.
    """

    def __init__(self, use_cudagraphable_rng: bool = False, is_inference_rng_tracker: bool = False):
        self.use_cudagraphable_rng = use_cudagraphable_rng
        self.is_inference_rng_tracker = is_inference_rng_tracker
        self.reset()

    def reset(self) -> None:
        self._is_initialized = False
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()

    def is_initialized(self) -> bool:
        return self._is_initialized

    def get_states(self) -> dict[str, torch.Tensor]:
        return dict(self.states_)

    def set_states(self, states: dict[str, torch.Tensor]) -> None:
        self._is_initialized = True
        self.states_ = states

    def add(self, name: str, seed: int) -> None:
        self._is_initialized = True
        if seed in self.seeds_:
            raise Exception(f"seed {seed} already exists")
        if name in self.states_:
            raise Exception(f"rng state {name} already exists")
        self.seeds_.add(seed)
        orig = torch.get_rng_state()
        torch.manual_seed(seed)
        self.states_[name] = torch.get_rng_state()
        torch.set_rng_state(orig)

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng") -> Iterator[None]:
        if name not in self.states_:
            raise Exception(f"rng state {name} is not added")
        orig = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(orig)


def _patch_rng_tracker() -> None:
    # The tracker saves/restores CUDA generator states; megatron builds it from this module-level class name.
    from megatron.core.tensor_parallel import random

    random.CudaRNGStatesTracker = CpuRNGStatesTracker  # type: ignore[misc]
    random.initialize_rng_tracker(force_reset=True)


def _patch_checkpoint_writer() -> None:
    # FileSystemWriterAsync.preload_tensors ends with torch.cuda.synchronize().
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    cls = filesystem_async.FileSystemWriterAsync
    cls.preload_tensors = staticmethod(_with_cpu_torch(cls.__dict__["preload_tensors"].__func__))


def _patch_checkpoint_finalize() -> None:
    # save_state_dict_async_finalize broadcasts its failure flag from a tensor on torch.cuda.current_device().
    from megatron.core.dist_checkpointing.strategies import state_dict_saver, torch as torch_strategy

    patched = _with_cpu_torch(state_dict_saver.save_state_dict_async_finalize)
    state_dict_saver.save_state_dict_async_finalize = patched
    torch_strategy.save_state_dict_async_finalize = patched


def _patch_tp_collectives() -> None:
    # The gather / reduce-scatter helpers of tensor-parallel regions (e.g. gathering vocab-parallel logits with
    # parallel_output=False) allocate their output on torch.cuda.current_device().
    from megatron.core.tensor_parallel import mappings

    for name, obj in list(vars(mappings).items()):
        if isinstance(obj, types.FunctionType) and obj.__module__ == mappings.__name__ and "cuda" in obj.__code__.co_names:
            setattr(mappings, name, _with_cpu_torch(obj))


def _patch_pipeline_p2p() -> None:
    # Pipeline stages receive activations into buffers allocated on torch.cuda.current_device().
    from megatron.core.pipeline_parallel import p2p_communication

    cls = p2p_communication.P2PCommunicator
    for name in ("_communicate", "_communicate_shapes"):
        setattr(cls, name, _with_cpu_torch(cls.__dict__[name]))


def _patch_pipeline_schedules() -> None:
    # The schedules count tokens in a tensor created with device="cuda".
    from megatron.core.pipeline_parallel import schedules

    for name in ("forward_backward_no_pipelining", "forward_backward_pipelining_without_interleaving",
                 "forward_backward_pipelining_with_interleaving"):
        setattr(schedules, name, _with_cpu_torch(getattr(schedules, name)))


def _patch_sequence_parallel_dgrad() -> None:
    # Under sequence parallelism a trained linear's backward reduce-scatters its input gradient into a buffer
    # allocated on torch.cuda.current_device(). The function sits under torch.amp's custom_bwd: patch the inner one
    # and wrap it again. (gloo itself has reduce_scatter_tensor / all_gather_into_tensor since torch 2.x: no patch.)
    from megatron.core.tensor_parallel import layers

    cls = layers.LinearWithGradAccumulationAndAsyncCommunication
    inner = cls.__dict__["backward"].__func__.__wrapped__
    patched = _with_cpu_torch(inner)
    cls.backward = staticmethod(functools.wraps(inner)(layers.custom_bwd(patched)))
    cls.backward._cpu_compat_patch = True  # type: ignore[attr-defined]


_PATCHES: dict[str, Callable[[], None]] = {
    "rope_inv_freq_device": _patch_rope,
    "global_memory_buffer_device": _patch_memory_buffer,
    "rng_tracker_cpu": _patch_rng_tracker,
    "checkpoint_writer_synchronize": _patch_checkpoint_writer,
    "checkpoint_finalize_device": _patch_checkpoint_finalize,
    "tp_collectives_device": _patch_tp_collectives,
    "pipeline_p2p_device": _patch_pipeline_p2p,
    "pipeline_schedule_token_count": _patch_pipeline_schedules,
    "sequence_parallel_dgrad_device": _patch_sequence_parallel_dgrad,
}


def require_psutil() -> None:
    """Without psutil, megatron's checkpoint writer process dies before its try block and save hangs silently."""
    try:
        importlib.import_module("psutil")
    except ImportError as err:
        raise ImportError("megatron-core checkpoint saving needs `psutil` (it hangs without it): pip install psutil") from err


def apply(force: bool = False) -> list[str]:
    """Install the CPU patches once (only without CUDA unless `force`); returns the names installed so far."""
    require_psutil()
    if torch.cuda.is_available() and not force:
        return list(_applied)
    for name, patch in _PATCHES.items():
        if name not in _applied:
            patch()
            _applied.append(name)
    return list(_applied)


def applied() -> list[str]:
    return list(_applied)


def causal_attention_mask(seq_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean mask [1, 1, s, s], True = masked (future positions).

    megatron builds this default mask on "cuda" when `attention_mask=None`; pass this one explicitly instead.
    """
    return torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool, device=device), diagonal=1)[None, None]
