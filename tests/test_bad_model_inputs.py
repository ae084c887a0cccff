"""Bad checkpoint inputs and a full disk during conversion end with exit 2 and one line naming the file and key (or
the output being written), and publish nothing: Git LFS pointers, cut shards, wrong-typed or missing config.json
keys, a stale model_config.json, and the errors torch, DCP and safetensors raise when the disk fills."""
from __future__ import annotations

import errno
import json
import shutil

import pytest
import torch
from safetensors import SafetensorError
from torch.distributed.checkpoint.api import CheckpointException

from workflow_scripts.convert import conversion as convert

from workflow_scripts.convert import hf_checkpoint

from workflow_scripts.convert import mcore_checkpoint
from workflow_scripts.core.atomic import is_disk_full
from workflow_scripts.demo.demo_llama import write_llama
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.lfs_pointer import SPEC_LINE
from workflow_scripts.model.llama_model import LlamaConfig, load_hf_config

CFG = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2, num_attention_heads=4,
                  num_query_groups=2, head_dim=8, max_position_embeddings=64)
SHARD = "model-00001-of-00002.safetensors"
# The messages of torch's zip writer on a full disk, as users report them (torch.save to a path).
TORCH_WRITE_FAILED = ("[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing file data/37: "
                      "file write failed")
TORCH_UNEXPECTED_POS = "[enforce fail at inline_container.cc:664] . unexpected pos 56833600 vs 56833492"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_model_inputs")
    hf = write_llama(base / "hf", CFG, seed=5, shards=2)
    return hf, convert.hf_to_mcore(hf, base / "mcore", spec="local")


def _copy(src, tmp_path):
    return shutil.copytree(src, tmp_path / "hf")


def _to_mcore(hf, out, *extra):
    return convert.main(["hf-to-mcore", "--hf", str(hf), "--out", str(out), "--tp", "1", "--pp", "1", "--spec", "local",
                         "--make-vocab-size-divisible-by", "128", "--threads", "2", *extra])


def _only_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _nothing_published(out) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}.tmp*"))


# ---- 3. Git LFS pointers and cut shards ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [SHARD, "model.safetensors.index.json", "config.json"])
def test_lfs_pointer_in_the_checkpoint_is_named(models, tmp_path, capsys, name):
    hf = _copy(models[0], tmp_path)
    (hf / name).write_bytes(SPEC_LINE + b"\noid sha256:" + b"1" * 64 + b"\nsize 52428800\n")
    out = tmp_path / "out"
    assert _to_mcore(hf, out) == 2
    assert _only_error(capsys) == (f"error: {hf / name}: a Git LFS pointer, not the file itself (run `git lfs pull` in "
                                   "the repository it came from)")
    assert _nothing_published(out)


def test_cut_shard_is_named_before_anything_is_written(models, tmp_path, capsys):
    hf = _copy(models[0], tmp_path)
    shard = hf / SHARD
    shard.write_bytes(shard.read_bytes()[:-100])
    out = tmp_path / "out"
    assert _to_mcore(hf, out) == 2
    assert _only_error(capsys).startswith(f"error: {shard}: tensor ")
    assert _nothing_published(out)
    shard.write_bytes(b"\x00" * 4)
    with pytest.raises(PipelineInputError, match=f"^{shard}: not a safetensors file"):
        hf_checkpoint.SafetensorsFile(shard)


# ---- 4. config.json keys -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,message", [
    ({"num_attention_heads": "8"}, "key 'num_attention_heads' is \"8\" (str), expected an integer"),
    ({"hidden_size": None}, "key 'hidden_size' is null, expected an integer"),
    ({"vocab_size": True}, "key 'vocab_size' is true (bool), expected an integer"),
    ({"num_hidden_layers": 0}, "key 'num_hidden_layers' is 0, expected an integer >= 1"),
    ({"rms_norm_eps": "1e-5"}, "key 'rms_norm_eps' is \"1e-5\" (str), expected a number"),
    ({"tie_word_embeddings": "false"}, "key 'tie_word_embeddings' is \"false\" (str), expected true or false"),
    ({"torch_dtype": 16}, "key 'torch_dtype' is 16 (int), expected a string"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": "8"}},
     "key 'rope_scaling.factor' is \"8\" (str), expected a number"),
    ({"rope_scaling": "llama3"}, "key 'rope_scaling' is \"llama3\" (str), expected an object"),
    ({"num_key_value_heads": 3}, "model config: num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
])
def test_wrong_typed_config_value_names_file_key_and_type(models, tmp_path, change, message):
    hf = _copy(models[0], tmp_path)
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(PipelineInputError) as err:
        load_hf_config(hf)
    assert str(err.value) == f"{hf / 'config.json'}: {message}"


def test_missing_config_key_exits_2_naming_file_and_key(models, tmp_path, capsys):
    hf = _copy(models[0], tmp_path)
    config = json.loads((hf / "config.json").read_text())
    del config["intermediate_size"]
    (hf / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    assert _to_mcore(hf, out) == 2
    assert _only_error(capsys) == f"error: {hf / 'config.json'}: key 'intermediate_size' is missing, expected an integer"
    assert _nothing_published(out)
    (hf / "config.json").write_text("[1, 2]")
    with pytest.raises(PipelineInputError, match="config.json: expected a JSON object$"):
        load_hf_config(hf)
    (hf / "config.json").write_bytes(b'{"model_type": "ll\xe4ma"}')
    with pytest.raises(PipelineInputError, match=r"config.json: not valid UTF-8 \(invalid continuation byte at byte 18\)"):
        load_hf_config(hf)


def test_model_config_without_a_model_key_is_named(models, tmp_path):
    mcore = shutil.copytree(models[1], tmp_path / "mcore")
    meta = json.loads((mcore / convert.MODEL_CONFIG).read_text())
    del meta["model"]["hidden_size"]
    (mcore / convert.MODEL_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(PipelineInputError, match=r"model_config\.json: not a model_config\.json of this converter "
                                                 r"\(TypeError: .*'hidden_size'"):
        convert.read_model_config(mcore)


# ---- 7. a full disk while writing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [TORCH_WRITE_FAILED, TORCH_UNEXPECTED_POS])
def test_torch_zip_writer_failure_is_a_full_disk_naming_the_output(models, tmp_path, capsys, monkeypatch, message):
    """torch.save to a path (common.pt, after the tensor files are written) fails as torch does on a full disk."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if not hasattr(f, "write"):  # a path: the file-object writes of DCP and the extra state go through
            raise RuntimeError(message)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(mcore_checkpoint.torch, "save", save)
    out = tmp_path / "out"
    assert _to_mcore(models[0], out) == 2
    assert _only_error(capsys) == f"error: No space left on device writing {out}"
    assert _nothing_published(out)


def test_enospc_in_the_checkpoint_writer_is_a_full_disk_naming_the_output(models, tmp_path, capsys, monkeypatch):
    import torch.distributed.checkpoint.filesystem as dcp_files

    def write_item(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dcp_files, "_write_item", write_item)
    out = tmp_path / "out"
    assert _to_mcore(models[0], out, "--threads", "1") == 2
    assert _only_error(capsys) == f"error: No space left on device writing {out}"
    assert _nothing_published(out)


def test_safetensors_full_disk_in_mcore_to_hf_names_the_output(models, tmp_path, capsys, monkeypatch):
    real_save_file = hf_checkpoint.save_file
    calls = []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # the first shard is complete on disk, the second one does not fit
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(hf_checkpoint, "save_file", save_file)
    out = tmp_path / "back"
    assert convert.main(["mcore-to-hf", "--mcore", str(models[1]), "--out", str(out)]) == 2
    assert _only_error(capsys) == f"error: No space left on device writing {out}"
    assert len(calls) == 2 and _nothing_published(out)


def test_only_write_failures_count_as_a_full_disk():
    no_space = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(CheckpointException("save failed", {0: (no_space, None)}))
    assert is_disk_full(RuntimeError(TORCH_WRITE_FAILED))
    wrapped = RuntimeError("writer failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert is_disk_full(wrapped)
    reader = RuntimeError("[enforce fail at inline_container.cc:245] . PytorchStreamReader failed reading zip archive: "
                          "failed finding central directory")
    assert not is_disk_full(reader)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
