"""The CPU compatibility layer for megatron-core: what it patches, that each patch is still needed, that it works."""
from __future__ import annotations

import inspect

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="patches apply only without CUDA")


def test_apply_lists_every_patch_once():
    from workflow_scripts.model import megatron_cpu_compat as compat

    first = compat.apply()
    assert first == list(compat.PATCH_NAMES)
    assert compat.apply() == first  # idempotent: nothing patched twice


def _patched_functions():
    from megatron.core import utils
    from megatron.core.dist_checkpointing.strategies import filesystem_async, state_dict_saver
    from megatron.core.models.common.embeddings import rotary_pos_embedding
    from megatron.core.pipeline_parallel import p2p_communication, schedules
    from megatron.core.tensor_parallel import layers, mappings

    p2p = p2p_communication.P2PCommunicator
    return {
        "rope_inv_freq_device": [rotary_pos_embedding.RotaryEmbedding.get_emb],
        "global_memory_buffer_device": [utils.GlobalMemoryBuffer.get_tensor],
        "checkpoint_writer_synchronize": [filesystem_async.FileSystemWriterAsync.preload_tensors],
        "checkpoint_finalize_device": [state_dict_saver.save_state_dict_async_finalize],
        "tp_collectives_device": [f for f in vars(mappings).values() if getattr(f, "_cpu_compat_patch", False)],
        "pipeline_p2p_device": [p2p._communicate, p2p._communicate_shapes],
        "pipeline_schedule_token_count": [schedules.forward_backward_no_pipelining,
                                          schedules.forward_backward_pipelining_without_interleaving,
                                          schedules.forward_backward_pipelining_with_interleaving],
        "sequence_parallel_dgrad_device": [layers.LinearWithGradAccumulationAndAsyncCommunication.backward],
    }


def test_each_patched_function_still_touches_cuda_upstream():
    """If megatron-core stops calling CUDA in one of these, the patch is dead weight: this test says which."""
    from workflow_scripts.model import megatron_cpu_compat as compat

    compat.apply()
    patched = _patched_functions()
    assert set(patched) | {"rng_tracker_cpu"} == set(compat.PATCH_NAMES)
    for name, funcs in patched.items():
        assert funcs, name
        for func in funcs:
            assert getattr(func, "_cpu_compat_patch", False), f"{name}: {func.__qualname__} is not patched"
            original = func.__wrapped__
            assert "cuda" in inspect.getsource(original), f"{name}: {original.__qualname__} no longer uses CUDA"


def test_rng_tracker_forks_cpu_state():
    from megatron.core.tensor_parallel import random

    from workflow_scripts.model import megatron_cpu_compat as compat

    compat.apply()
    tracker = random.get_cuda_rng_tracker()
    assert isinstance(tracker, compat.CpuRNGStatesTracker)
    tracker.reset()
    tracker.add("a", 11)
    before = torch.get_rng_state()
    with tracker.fork("a"):
        first = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)  # default stream untouched
    with tracker.fork("a"):
        second = torch.rand(3)
    assert not torch.equal(first, second)  # the forked stream advances
    assert torch.equal(first, torch.rand(3, generator=torch.Generator().manual_seed(11)))


def test_causal_mask_masks_the_future():
    from workflow_scripts.model.megatron_cpu_compat import causal_attention_mask

    mask = causal_attention_mask(4)
    assert mask.shape == (1, 1, 4, 4) and mask.dtype == torch.bool
    assert mask[0, 0].tolist() == [[False, True, True, True], [False, False, True, True],
                                   [False, False, False, True], [False, False, False, False]]


def test_gpt_model_forward_backward_on_cpu():
    from workflow_scripts.model.llama_model import LlamaConfig, build_gpt_model, init_parallel
    from workflow_scripts.model.megatron_cpu_compat import causal_attention_mask

    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_layers=1, num_attention_heads=4,
                      num_query_groups=2, head_dim=8, max_position_embeddings=64).with_padding(1)
    init_parallel(1, 1)
    model = build_gpt_model(cfg, "local")
    tokens = torch.randint(0, 100, (2, 8))
    logits = model(tokens, torch.arange(8).expand(2, 8), causal_attention_mask(8))
    assert logits.shape == (2, 8, 128)
    logits.sum().backward()
    assert model.decoder.layers[0].self_attention.linear_qkv.weight.grad is not None


def test_gloo_has_the_sequence_parallel_collectives(tmp_path):
    """Sequence parallelism all-gathers and reduce-scatters along the sequence (torch's all_gather_into_tensor /
    reduce_scatter_tensor). gloo implements both in this torch, so the layer patches no collective: if a torch pin
    loses one, this says so."""
    import torch.distributed as dist

    dist_ok = not dist.is_initialized()
    if dist_ok:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    x = torch.arange(6.0)
    gathered, scattered = torch.empty(6), torch.empty(6)
    dist.all_gather_into_tensor(gathered, x)
    dist.reduce_scatter_tensor(scattered, x)
    assert torch.equal(gathered, x) and torch.equal(scattered, x)
    if dist_ok:
        dist.destroy_process_group()
