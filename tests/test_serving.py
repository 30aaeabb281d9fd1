"""A run on a served backend: settings, the adapters reaching the server, forced choice through logprobs.

The vLLM-only parts of the API (the runtime LoRA endpoints, top logprobs) are answered by a loopback
HTTP server shaped like vLLM's documented answers; the whole served run against a real
`transformers serve` is in test_served_run.py.
"""

import json
import math

import pytest
from servers import Stub

from sltk import serving
from sltk.chat import ChatRequest
from sltk.cli import main
from sltk.config import ConfigError, preset
from sltk.pipeline import Pipeline
from sltk.served import LogprobsUnavailable, OpenAIBackend, RequestRejected


def vllm_like(loaded: set):
    """Answers like vLLM's: /models lists the base and the loaded LoRAs; adapters load once; top logprobs."""
    def answer(method, path, body):
        if path.endswith("/models"):
            ids = ["base", *sorted(loaded)]
            return 200, json.dumps({"object": "list", "data": [{"id": i} for i in ids]}).encode()
        if path.endswith("/load_lora_adapter"):
            if body["lora_name"] in loaded:
                return 400, json.dumps({"object": "error", "message": f"The lora adapter '{body['lora_name']}' has "
                                        "already been loaded."}).encode()
            loaded.add(body["lora_name"])
            return 200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.".encode()
        if path.endswith("/unload_lora_adapter"):
            loaded.discard(body["lora_name"])
            return 200, b"Success"
        if path.endswith("/completions"):
            top = {"yes": math.log(0.6), "Yes": math.log(0.1), "no": math.log(0.2), "The": math.log(0.05)}
            return 200, json.dumps({"choices": [{"text": "yes", "logprobs": {"top_logprobs": [top]}}]}).encode()
        return 404, b'{"detail": "Not Found"}'
    return answer


@pytest.fixture
def stub():
    loaded: set = set()
    server = Stub(vllm_like(loaded))
    server.loaded = loaded
    yield server
    server.close()


def test_a_served_run_needs_the_server_address():
    with pytest.raises(ConfigError, match=r"serve.backend = 'openai' needs serve.base_url.*--base-url"):
        preset("smoke", **{"serve.backend": "openai"})
    with pytest.raises(ConfigError, match="serve.adapters"):
        preset("smoke", **{"serve.adapters": "copy"})


def test_a_run_moves_between_backends_and_resumes(tmp_path):
    Pipeline(preset("smoke"), tmp_path / "r").mark("iter_1/queries", records=1)
    served = preset("smoke", **{"serve.backend": "openai", "serve.base_url": "http://h:8000/v1",
                                "train.processes": 4, "train.accelerate_config": "fsdp"})
    moved = Pipeline(served, tmp_path / "r")  # where it computes is not what it computes
    assert moved.served and moved.done("iter_1/queries")
    with pytest.raises(ValueError, match="train.lr"):
        Pipeline(preset("smoke", **{"train.lr": 0.1, "serve.base_url": "http://h:8000/v1"}), tmp_path / "r")


def test_the_command_line_moves_an_existing_run_to_a_server(tmp_path, monkeypatch):
    Pipeline(preset("smoke", name="r"), tmp_path / "r").mark("iter_1/queries", records=1)
    seen = {}
    monkeypatch.setattr(Pipeline, "run", lambda self: seen.setdefault("config", self.config) and None)
    monkeypatch.setattr("sltk.cli._report", lambda *a: None)
    assert main(["run", "--name", "r", "--runs-dir", str(tmp_path), "--base-url", "http://h:1/v1",
                 "--adapters", "manual", "--train-processes", "2", "--accelerate-config", "ddp"]) == 0
    s, t = seen["config"].serve, seen["config"].train
    assert (s.backend, s.base_url, s.adapters) == ("openai", "http://h:1/v1", "manual")
    assert (t.processes, t.accelerate_config) == (2, "ddp")


def test_adapters_load_through_the_runtime_api_once_and_unload(stub, tmp_path):
    config = preset("smoke", name="demo", **{"serve.base_url": stub.url, "serve.backend": "openai"})
    backend = OpenAIBackend(stub.url, "base", progress=False)
    adapters = serving.ServedAdapters(backend, config, tmp_path)
    folders = {"generator-iter1": tmp_path / "g", "extender-iter1": tmp_path / "e"}
    names = adapters.provide(folders)
    assert names == {"generator-iter1": "demo-generator-iter1", "extender-iter1": "demo-extender-iter1"}
    assert stub.loaded == set(names.values())
    loads = [b for m, p, b in stub.requests if p.endswith("/load_lora_adapter")]
    assert {b["lora_path"] for b in loads} == {str((tmp_path / n).resolve()) for n in "ge"}
    assert adapters.provide(folders) == names  # listed at /models: not loaded again
    assert len([r for r in stub.requests if r[1].endswith("/load_lora_adapter")]) == 2
    assert backend.load_adapter("demo-generator-iter1", tmp_path / "g")  # vLLM's "already loaded" is no error
    adapters.release(names.values())
    assert stub.loaded == set()


def test_without_the_runtime_api_the_run_stops_naming_each_folder_and_name(tmp_path):
    server = Stub(lambda m, p, b: (200, b'{"data": [{"id": "base"}]}') if p.endswith("/models")
                  else (404, b'{"detail": "Not Found"}'))
    try:
        for mode in ("load", "manual"):
            config = preset("smoke", name="demo", **{"serve.base_url": server.url, "serve.backend": "openai",
                                                     "serve.adapters": mode})
            adapters = serving.ServedAdapters(OpenAIBackend(server.url, "base", progress=False), config, tmp_path)
            with pytest.raises(serving.AdaptersNeeded) as err:
                adapters.provide({"generator-iter2": tmp_path / "iter_2" / "adapters" / "generator"})
            msg = str(err.value)
            assert f"demo-generator-iter2 = {tmp_path / 'iter_2' / 'adapters' / 'generator'}" in msg
            assert "--enable-lora" in msg and "run the same command again" in msg
            assert ("VLLM_ALLOW_RUNTIME_LORA_UPDATING" in msg) == (mode == "load")
    finally:
        server.close()


def test_forced_choice_reads_the_first_tokens_top_logprobs(stub, tokenizer):
    backend = OpenAIBackend(stub.url, "base", tokenizer=tokenizer, progress=False)
    req = ChatRequest([{"role": "user", "content": "Is this a good topic? Answer yes or no."}])
    [scores] = backend.choice_logprobs([req], {"yes": ["yes", "Yes"], "no": ["no", "No"], "maybe": ["maybe"]})
    assert scores["yes"] == pytest.approx(math.log(0.7)) and scores["no"] == pytest.approx(math.log(0.2))
    assert scores["maybe"] == float("-inf")
    [(_, path, body)] = [r for r in stub.requests if r[1].endswith("/completions")]
    assert body["max_tokens"] == 1 and body["logprobs"] == 20 and body["prompt"].endswith("assistant\n")


def test_a_server_without_logprobs_is_said_so(tokenizer):
    server = Stub(lambda m, p, b: (200, b'{"choices": [{"text": "yes", "logprobs": null}]}'))
    refusing = Stub(lambda m, p, b: (400, b'{"error": {"message": "logprobs is not supported"}}'))
    req = ChatRequest([{"role": "user", "content": "Hi"}])
    try:
        for s in (server, refusing):
            backend = OpenAIBackend(s.url, "m", tokenizer=tokenizer, progress=False)
            with pytest.raises(LogprobsUnavailable, match="sampled judge"):
                backend.choice_logprobs([req], {"y": ["yes"]})
        with pytest.raises(RequestRejected):  # another refusal stays what it is
            OpenAIBackend(refusing.url, "m", progress=False).load_adapter("a", "/x")
    finally:
        server.close()
        refusing.close()


def test_sglangs_adapter_api_at_the_servers_root_is_tried_after_vllms(tmp_path):
    server = Stub(lambda m, p, b: (200, b"Success") if p == "/load_lora_adapter" else (404, b'{"detail": "no"}'))
    try:
        assert OpenAIBackend(server.url, "base", progress=False).load_adapter("a", tmp_path)
        assert [p for _, p, _ in server.requests] == ["/v1/load_lora_adapter", "/load_lora_adapter"]
    finally:
        server.close()
