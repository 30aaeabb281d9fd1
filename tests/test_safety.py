"""What a run may load and do: safetensors only, no model code unless asked, no shell, keys kept secret."""

import ast
import logging
from pathlib import Path

import pytest
import torch

from sltk.chat import ChatRequest, Sampling
from sltk.config import Config, preset
from sltk.models import ModelError, check_adapter, load_base
from sltk.served import OpenAIBackend, ServerError

SLTK = Path(__file__).resolve().parent.parent / "sltk"


def test_pickled_weights_are_refused_by_name(tmp_path, tokenizer):
    from conftest import tiny_model

    tiny = tiny_model(tokenizer)
    tiny.model.config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    torch.save(tiny.model.state_dict(), tmp_path / "pytorch_model.bin")  # loading it would unpickle
    with pytest.raises(ModelError, match="has no safetensors weights. sltk loads no pickled .bin weights"):
        load_base(str(tmp_path), quantization=None)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match=r"no adapter_model.safetensors \(found \['adapter_model.bin'\]\)"):
        check_adapter(tmp_path / "adapter")


def test_a_models_own_code_runs_only_when_the_user_sets_it():
    assert Config().trust_remote_code is False and preset("paper").trust_remote_code is False
    assert preset("smoke", trust_remote_code=True).trust_remote_code is True


def test_no_shell_and_no_pickle_in_sltk():
    """No shell strings (shell=True, os.system, os.popen) and no unpickling torch.load anywhere in sltk."""
    found = []
    for path in sorted(SLTK.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                found.append(f"{path.name}:{node.lineno} {name}")
            if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                   for k in node.keywords):
                found.append(f"{path.name}:{node.lineno} shell=")
            if name == "torch.load" and not any(k.arg == "weights_only" and getattr(k.value, "value", None) is True
                                                for k in node.keywords):
                found.append(f"{path.name}:{node.lineno} torch.load without weights_only=True")
    assert found == []


def test_the_api_key_is_never_shown(caplog):
    caplog.set_level(logging.DEBUG)
    backend = OpenAIBackend("http://127.0.0.1:9/v1", "m", api_key="sk-very-secret", retries=0, timeout=2,
                            progress=False)
    assert "sk-very-secret" not in repr(backend) and "sk-very-secret" not in str(vars(backend).get("api_key"))
    with pytest.raises(ServerError) as err:
        backend.generate([ChatRequest([{"role": "user", "content": "Hi"}])], Sampling(max_new_tokens=4))
    assert "sk-very-secret" not in str(err.value) and "sk-very-secret" not in caplog.text
