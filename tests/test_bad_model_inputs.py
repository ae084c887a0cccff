"""Bad checkpoint inputs end with exit 2 and one line naming the file and key, and publish nothing: Git LFS pointers,
cut shards, wrong-typed or missing config.json keys, a stale model_config.json."""
from __future__ import annotations

import json
import shutil

import pytest

from workflow_scripts import convert, hf_checkpoint
from workflow_scripts.demo_llama import write_llama
from workflow_scripts.errors import PipelineInputError
from workflow_scripts.lfs_pointer import SPEC_LINE
from workflow_scripts.llama_model import LlamaConfig, load_hf_config

CFG = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2, num_attention_heads=4,
                  num_query_groups=2, head_dim=8, max_position_embeddings=64)
SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_model_inputs")
    hf = write_llama(base / "hf", CFG, seed=5, shards=2)
    return hf, convert.hf_to_mcore(hf, base / "mcore", spec="local")


def _copy(src, tmp_path):
    return shutil.copytree(src, tmp_path / "hf")


def _to_mcore(hf, out, *extra):
    return convert.main(["hf-to-mcore", "--hf", str(hf), "--out", str(out), "--spec", "local", *extra])


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
