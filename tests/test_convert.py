"""HF Llama <-> megatron-core conversion: layout, round trip, bad input, and the logits parity gate (TP 1)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from convert_models import SHAPES, make_models
from workflow_scripts.convert import conversion as convert
from workflow_scripts.convert import mcore_layout as L
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.convert.hf_checkpoint import load_all
from workflow_scripts.model.lora import CONFIG as LORA_CONFIG, WEIGHTS as LORA_WEIGHTS, TARGETS, adapter_key
from workflow_scripts.model.llama_model import LlamaConfig
from workflow_scripts.convert.mcore_checkpoint import McoreReader


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("convert_models"))


# ---- layout -------------------------------------------------------------------------------------------------------

def test_qkv_rows_are_grouped_per_query_group():
    cfg = LlamaConfig(vocab_size=10, hidden_size=4, intermediate_size=4, num_layers=1, num_attention_heads=4,
                      num_query_groups=2, head_dim=1)
    q, k, v = (torch.tensor([[float(base + i)] * 4 for i in range(n)]) for base, n in ((0, 4), (10, 2), (20, 2)))
    qkv = L.interleave_qkv(cfg, q, k, v)
    # group 0: q0 q1 k0 v0, group 1: q2 q3 k1 v1
    assert qkv[:, 0].tolist() == [0, 1, 10, 20, 2, 3, 11, 21]
    assert all(torch.equal(a, b) for a, b in zip(L.deinterleave_qkv(cfg, qkv), (q, k, v)))


def test_vocab_padding_follows_megatron_convention():
    cfg = SHAPES["odd_vocab"][0]
    assert cfg.with_padding(1).padded_vocab_size == 1024
    assert cfg.__class__(**{**cfg.to_json(), "make_vocab_size_divisible_by": 8}).with_padding(2).padded_vocab_size == 1008


def test_checkpoint_keys_and_shapes_are_what_megatron_asks_for(models):
    """Our writer produces exactly the sharded keys (and global shapes) of GPTModel.sharded_state_dict()."""
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, ShardedTensorFactory

    from workflow_scripts.model.llama_model import build_gpt_model, init_parallel

    _, mcore = models["gqa"]
    cfg, _ = convert.read_model_config(mcore)
    init_parallel(1, 1)
    expected = {}
    for value in build_gpt_model(cfg, "local").sharded_state_dict().values():
        if isinstance(value, ShardedObject):
            expected[value.unique_key] = None
        elif isinstance(value, (ShardedTensor, ShardedTensorFactory)):
            expected[value.key] = tuple(value.global_shape) if isinstance(value, ShardedTensor) else None
    meta = McoreReader(mcore).metadata.state_dict_metadata
    # the final norm's extra state is asked for by the TE spec only (checked on a GPU, see docs)
    assert set(meta) == set(expected) | {"decoder.final_layernorm._extra_state/shard_0_1"}
    for key, shape in expected.items():
        if shape is not None:
            assert tuple(meta[key].size) == shape, key


def test_te_and_local_names_differ_only_in_the_norms(models):
    """TE fuses the two pre-norms into linear_qkv / linear_fc1; the local spec model has these parameter names."""
    from workflow_scripts.model.llama_model import build_gpt_model, init_parallel

    cfg, _ = convert.read_model_config(models["gqa"][1])
    local, te = L.module_param_names(cfg, "local"), L.module_param_names(cfg, "te")
    differ = {k for k in local if local[k] != te[k]}
    assert differ == {L.hf_layer(i, n) for i in range(cfg.num_layers) for n in (L.HF_IN_NORM, L.HF_POST_NORM)}
    assert all(te[L.hf_layer(i, L.HF_IN_NORM)].endswith("linear_qkv.layer_norm_weight") for i in range(cfg.num_layers))
    init_parallel(1, 1)
    params = {k for k in build_gpt_model(cfg, "local").state_dict() if not k.endswith("_extra_state")}
    assert params == set(local.values())


# ---- round trip and bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SHAPES))
def test_hf_mcore_hf_round_trip_is_bit_exact(models, tmp_path, name):
    hf, mcore = models[name]
    back = convert.mcore_to_hf(mcore, tmp_path / "hf")
    original, restored = load_all(hf), load_all(back)
    if SHAPES[name][1].get("fused_qkv"):
        cfg = SHAPES[name][0]
        for layer in range(cfg.num_layers):
            fused = original.pop(L.hf_layer(layer, L.HF_QKV_FUSED))
            for part, tensor in zip((L.HF_Q, L.HF_K, L.HF_V), L.split_fused_qkv(cfg, fused)):
                original[L.hf_layer(layer, part)] = tensor
    assert set(original) == set(restored)
    for key, tensor in original.items():
        assert restored[key].dtype == tensor.dtype and torch.equal(restored[key], tensor), key
    assert json.loads((back / "config.json").read_text()) == json.loads((hf / "config.json").read_text())


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _expect_error(tmp_path, hf, match, **kwargs):
    out = tmp_path / "out"
    with pytest.raises(PipelineInputError, match=match):
        convert.hf_to_mcore(hf, out, **kwargs)
    assert not out.exists() and not list(tmp_path.glob(".out.tmp*")), "left a (partial) output behind"


def test_missing_shard_names_the_file(models, tmp_path):
    hf = _copy(models["gqa"][0], tmp_path / "hf")
    (hf / "model-00002-of-00003.safetensors").unlink()
    _expect_error(tmp_path, hf, r"model-00002-of-00003\.safetensors: missing shard")


def test_shape_contradicting_config_names_the_tensor(models, tmp_path):
    hf = _copy(models["mha"][0], tmp_path / "hf")
    tensors = load_all(hf)
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:-1].clone()
    save_file(tensors, str(hf / "model.safetensors"))
    # the check runs while streaming (layer 1 comes late): the error must still leave no output folder
    _expect_error(tmp_path, hf, r"'model\.layers\.1\.mlp\.up_proj\.weight' has shape \(159, 64\), config\.json implies \(160, 64\)")


def test_dtype_contradicting_config_names_the_tensor(models, tmp_path):
    hf = _copy(models["mha"][0], tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}))
    _expect_error(tmp_path, hf, r"'model\.embed_tokens\.weight' is torch\.float32, config\.json says torch_dtype=bfloat16")


def test_missing_tensor_is_named_before_writing(models, tmp_path):
    hf = _copy(models["mha"][0], tmp_path / "hf")
    tensors = load_all(hf)
    del tensors["model.layers.1.self_attn.v_proj.weight"]
    save_file(tensors, str(hf / "model.safetensors"))
    _expect_error(tmp_path, hf, r"'model\.layers\.1\.self_attn\.v_proj\.weight' is missing")


@pytest.mark.parametrize("change,match", [
    ({"architectures": ["MistralForCausalLM"], "model_type": "mistral"}, "unsupported architecture"),
    ({"tie_word_embeddings": True}, "tie_word_embeddings"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling type 'yarn'"),
])
def test_unsupported_configs_are_refused(models, tmp_path, change, match):
    hf = _copy(models["mha"][0], tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, **change}))
    _expect_error(tmp_path, hf, match)


@pytest.mark.parametrize("tp,pp,match", [(4, 1, "tp=4 does not divide num_key_value_heads=2"),
                                         (1, 3, "pp=3 does not divide num_hidden_layers=2")])
def test_parallel_sizes_must_divide_the_model(models, tmp_path, tp, pp, match):
    _expect_error(tmp_path, models["gqa"][0], match, tp=tp, pp=pp)


@pytest.mark.parametrize("shard,threads", [(2, 3), (1, 2)])
def test_truncated_shard_read_by_a_writer_thread_fails_the_job(models, tmp_path, capsys, shard, threads):
    """The bug report: the second shard lost its last 1,000 bytes (at these thread counts the cut tensor would be read
    by one of DCP's extra writer threads). The shard's header is checked against its size before any writer starts,
    so the job fails naming the shard and the cut tensor; an error inside a writer thread is the next test's."""
    hf = _copy(models["gqa"][0], tmp_path / "hf")
    cut = hf / f"model-0000{shard}-of-00003.safetensors"
    cut.write_bytes(cut.read_bytes()[:-1000])
    out = tmp_path / "out"
    code = convert.main(["hf-to-mcore", "--hf", str(hf), "--out", str(out), "--tp", "1", "--pp", "1", "--spec", "local",
                         "--make-vocab-size-divisible-by", "128", "--threads", str(threads)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: {cut}: tensor ") and err[-1].endswith("(truncated)"), err[-3:]
    assert not out.exists() and not list(tmp_path.glob(".out.tmp*")), "published a checkpoint with missing chunks"


def test_write_error_in_a_writer_thread_fails_the_job(models, tmp_path, monkeypatch):
    """A disk error while a DCP writer thread (not the main thread) writes its file fails the conversion with it,
    reported as a full disk naming the output."""
    from workflow_scripts.core.errors import DiskFullError
    import errno
    import threading

    from torch.distributed.checkpoint import filesystem

    real = filesystem._write_item

    def failing(transforms, stream, *args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            raise OSError(errno.ENOSPC, "No space left on device", stream.name)
        return real(transforms, stream, *args, **kwargs)

    monkeypatch.setattr(filesystem, "_write_item", failing)
    out = tmp_path / "out"
    with pytest.raises(DiskFullError, match=f"No space left on device writing {out}$") as caught:
        convert.hf_to_mcore(models["gqa"][0], out, threads=2)
    assert isinstance(caught.value.__cause__, OSError) and "__0_" in str(caught.value.__cause__)  # the writer's own
    assert not out.exists() and not list(tmp_path.glob(".out.tmp*"))


def test_items_without_a_storage_record_are_found(models):
    """The last guard: a writer that vanished without any error still leaves its items unrecorded; they are named."""
    from workflow_scripts.convert.mcore_checkpoint import _LazySavePlanner, extra_state_key
    from workflow_scripts.core.workers import ThreadErrors

    metadata = McoreReader(models["gqa"][1]).metadata
    chunks = convert._hf_to_mcore_chunks(None, SHAPES["gqa"][0].with_padding(1), "grouped")
    objects = {extra_state_key(m): b"" for m in L.GLOBAL_EXTRA_STATE_MODULES}
    planner = _LazySavePlanner(chunks, objects, None, ThreadErrors())
    assert planner.missing(metadata) == []
    dropped = next(i for i in metadata.storage_data if i.fqn == L.FC2 and tuple(i.offset)[0] == 1)
    del metadata.storage_data[dropped]
    assert planner.missing(metadata) == [f"{L.FC2} at (1, 0, 0)"]


# A converter killed (SIGKILL: no cleanup) while DCP writes its files.
_KILLED_MID_WRITE = """
import os, signal, sys
from workflow_scripts.convert import conversion as convert
from workflow_scripts.convert import mcore_checkpoint
real = mcore_checkpoint._LazySavePlanner.resolve_data
def resolve_data(self, item):
    self.calls = getattr(self, "calls", 0) + 1
    if self.calls == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, item)
mcore_checkpoint._LazySavePlanner.resolve_data = resolve_data
sys.exit(convert.main(sys.argv[1:]))
"""


def test_temp_folder_of_a_killed_conversion_is_removed_by_the_next_run(models, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from train_fixtures import REPO

    hf, out = models["gqa"][0], tmp_path / "out"
    args = ["hf-to-mcore", "--hf", str(hf), "--out", str(out), "--tp", "1", "--pp", "1", "--spec", "local",
            "--make-vocab-size-divisible-by", "128", "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = list(tmp_path.glob(".out.tmp-*"))
    assert len(left) == 1 and left[0].is_dir() and any(left[0].iterdir()) and not out.exists()
    convert.hf_to_mcore(hf, out, spec="local")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert McoreReader(out).shape(L.EMBEDDING) == McoreReader(models["gqa"][1]).shape(L.EMBEDDING)


def test_cli_exits_2_with_one_line(models, tmp_path, capsys):
    code = convert.main(["hf-to-mcore", "--hf", str(models["gqa"][0]), "--out", str(tmp_path / "o"), "--tp", "4",
                         "--pp", "1", "--spec", "te", "--make-vocab-size-divisible-by", "128", "--threads", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: tp=4 does not divide num_key_value_heads=2")


# ---- parity gate (transformers is the reference) ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SHAPES))
def test_converted_model_matches_hf_logits(models, name):
    from workflow_scripts.convert.verify_conversion import verify

    report = verify(*models[name], tolerance=1e-4, seq_len=24)
    assert report["passed"] and report["max_abs_diff"] < 1e-4 and report["argmax_agreement"] == 1.0, report


def test_wrong_qkv_layout_fails_the_check(models, tmp_path, capsys):
    from workflow_scripts.convert import verify_conversion

    hf = models["gqa"][0]
    naive = convert.hf_to_mcore(hf, tmp_path / "naive", qkv_layout="naive")
    parity = tmp_path / "parity.json"
    code = verify_conversion.main(["--hf", str(hf), "--mcore", str(naive), "--out", str(parity), "--tolerance", "1e-4",
                                   "--seed", "0"])
    assert code == 2 and not parity.exists()
    assert "conversion parity check failed" in capsys.readouterr().err


def _random_lora(lora_dir, cfg, targets, r=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = L.mcore_shapes(cfg)
    weights = {}
    for layer in range(cfg.num_layers):
        for target in targets:
            out_f, in_f = shapes[TARGETS[target][1]][1:]
            weights[adapter_key(layer, target, "lora_A")] = 0.1 * torch.randn(r, in_f, generator=gen)
            weights[adapter_key(layer, target, "lora_B")] = 0.1 * torch.randn(out_f, r, generator=gen)
    lora_dir.mkdir()
    save_file(weights, str(lora_dir / LORA_WEIGHTS))
    (lora_dir / LORA_CONFIG).write_text(json.dumps({"r": r, "alpha": 2.0 * r, "target_modules": list(targets)}))
    return weights


def test_lora_merge_equals_adapter_logits(models, tmp_path):
    """Merged HF weights give the logits of the base megatron model with the adapter applied at run time."""
    from workflow_scripts.model.llama_model import init_parallel
    from workflow_scripts.convert.verify_conversion import compare, hf_logits, load_mcore_model, mcore_logits, token_batch

    hf, mcore = models["gqa"]
    targets = ("linear_qkv", "linear_proj", "linear_fc1")
    weights = _random_lora(tmp_path / "lora", SHAPES["gqa"][0], targets)
    merged = convert.mcore_to_hf(mcore, tmp_path / "merged", lora_dir=tmp_path / "lora")

    init_parallel(1, 1)
    model, cfg = load_mcore_model(mcore)
    for layer, block in enumerate(model.decoder.layers):
        for target in targets:
            module = block.get_submodule(TARGETS[target][0])
            a, b = weights[adapter_key(layer, target, "lora_A")], weights[adapter_key(layer, target, "lora_B")]

            def hook(mod, inputs, output, a=a, b=b):
                return (output[0] + 2.0 * (inputs[0] @ a.T) @ b.T, *output[1:])

            module.register_forward_hook(hook)
    tokens = token_batch(cfg.vocab_size, 2, 16, seed=3)
    adapter = mcore_logits(model, cfg, tokens)
    report = compare(hf_logits(merged, tokens), adapter, 1e-4)
    assert report["passed"], report
    assert compare(hf_logits(hf, tokens), adapter, 1e-4)["max_abs_diff"] > 1e-2  # the adapter does change the model
