"""The OpenAI-compatible backend against a real `transformers serve` running the embedded model."""

import json
import time

import pytest
from servers import Server, Stub, free_port

from sltk.chat import ChatRequest, ModelError, PromptError, Sampling
from sltk.served import OpenAIBackend, RequestRejected, ServerError, cut_at_stops

GREEDY = Sampling(temperature=0, max_new_tokens=8, stop=(), loop_tokens=0)
QUESTIONS = ["Name a colour.", "Write a poem.", "What is 2+2?", "Name a fruit.", "Why is the sky blue?", "Say hi."]


def ask(question, **kw):
    return ChatRequest([{"role": "user", "content": question}], **kw)


@pytest.fixture(scope="module")
def server(embedded_dir, tmp_path_factory):
    srv = Server(embedded_dir, tmp_path_factory.mktemp("serve") / "serve.log")
    yield srv
    srv.stop()


def backend(srv, **kw):
    kw = {"tokenizer": srv.model, "concurrency": 2, "progress": False, "timeout": 60, **kw}
    return OpenAIBackend(srv.url, srv.model, **kw)


def test_cut_at_stops_takes_the_earliest():
    assert cut_at_stops("a---b\n\n\nc", ("\n\n\n", "---")) == ("a", True)
    assert cut_at_stops("abc", ("x", "")) == ("abc", False)


def test_closed_port_fails_after_retries_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    be = OpenAIBackend(url, "m", retries=2, backoff=0.05, timeout=2, progress=False)
    started = time.monotonic()
    with pytest.raises(ServerError) as err:
        be.generate([ask("Hi")], GREEDY)
    assert time.monotonic() - started < 5
    msg = str(err.value)
    assert url + "/chat/completions" in msg and "3 attempts" in msg and "base_url" in msg
    assert "0 of 1 requests finished" in msg


@pytest.mark.parametrize("answer, said", [
    (b"<html>502 Bad Gateway</html>", "failed after 2 attempts; last error: answer is not JSON"),
    (b'{"object": "error"}', "unexpected answer without choices"),
    (None, "failed after 2 attempts; last error: no answer within 0.5 s"),
])
def test_a_server_that_answers_garbage_or_hangs_is_retried_then_named(answer, said):
    """A real HTTP server on loopback that answers with a broken body, an answer of the wrong shape, or not
    at all in time."""
    def reply(method, path, body):
        if answer is None:
            time.sleep(1.5)  # past the client's timeout
        return 200, answer or b""

    server = Stub(reply)
    try:
        be = OpenAIBackend(server.url, "m", retries=1, backoff=0.05, timeout=0.5, progress=False)
        with pytest.raises(ServerError, match=said) as err:
            be.generate([ask("Hi"), ask("Hello")], GREEDY)
        assert "of 2 requests finished first" in str(err.value)
    finally:
        server.close()


def test_prefill_without_tokenizer_names_the_fix():
    be = OpenAIBackend("http://127.0.0.1:9/v1", "m", progress=False)
    with pytest.raises(ModelError, match="tokenizer="):
        be.generate([ask("Count.", prefill="1, 2,")], GREEDY)
    with pytest.raises(ModelError, match="roles="):
        be.generate([ask("Hi", role="extender")], GREEDY)


def test_context_rejects_a_prompt_that_leaves_no_room(tokenizer):
    with pytest.raises(ModelError, match="tokenizer="):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", context=64)
    be = OpenAIBackend("http://127.0.0.1:9/v1", "m", tokenizer=tokenizer, context=64, progress=False)
    with pytest.raises(PromptError, match="context of 64"):
        be.generate([ask("word " * 80)], GREEDY)


@pytest.mark.integration
def test_chat_completion_stops_at_the_token_cap(server):
    be = backend(server)
    [out] = be.generate([ask("Write a long story about a lighthouse.", id="s")], GREEDY)
    assert out.text.strip() and out.id == "s"
    assert (out.finish_reason, out.tokens) == ("length", 8) and out.prompt_tokens > 0
    assert be.last_stats["finish_reasons"]["length"] == 1 and be.last_stats["tokens"] == 8
    assert be.send_extra_fields is False  # transformers serve refuses top_k / repetition_penalty: dropped


@pytest.mark.integration
def test_context_caps_max_tokens_to_the_room_left(server, tokenizer):
    req = ask("Write a long story about a lighthouse.")
    used = len(tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=True)["input_ids"])
    [out] = backend(server, context=used + 5).generate([req], GREEDY.with_(max_new_tokens=32))
    assert (out.tokens, out.finish_reason, out.prompt_tokens) == (5, "length", used)


@pytest.mark.integration
def test_prefill_is_continued_through_completions(server):
    be = backend(server, roles={"generator": server.model})
    outs = be.generate([ask("Count from 1 to 10.", prefill="1, 2, 3, 4,", role="generator"),
                        ask("Recite the alphabet.", prefill="a, b, c, d,")], GREEDY)
    assert outs[0].text.startswith(" 5, 6")
    assert outs[1].text.startswith(" e, f")


@pytest.mark.integration
def test_concurrent_results_keep_request_order(server):
    caps = [5, 2, 7, 3, 6, 4]
    reqs = [ask(q, id=f"q{i}", max_new_tokens=c) for i, (q, c) in enumerate(zip(QUESTIONS, caps))]
    seen = []
    outs = backend(server, concurrency=3).generate(reqs, GREEDY, on_result=lambda i, c: seen.append(i))
    assert [o.id for o in outs] == [r.id for r in reqs] and sorted(seen) == list(range(len(reqs)))
    assert all(o.tokens <= c and (o.finish_reason == "stop" or o.tokens == c) for o, c in zip(outs, caps))
    serial = backend(server, concurrency=1).generate(reqs, GREEDY)
    assert [o.text for o in outs] == [o.text for o in serial]


@pytest.mark.integration
def test_stop_strings_beyond_four_are_cut_locally(server):
    be = backend(server)
    [full] = be.generate([ask("Write a poem.")], GREEDY.with_(max_new_tokens=12))
    word = full.text.split()[3]
    stops = ("@@1", "@@2", "@@3", "@@4", word)  # the fifth is never sent to the server
    [cut] = be.generate([ask("Write a poem.")], GREEDY.with_(max_new_tokens=12, stop=stops))
    assert cut.text == full.text[: full.text.find(word)] and cut.finish_reason == "stop"


@pytest.mark.integration
def test_seeded_sampling_through_extra_body(server):
    # transformers serve samples only when the generation config says so; extra_body carries it.
    be = backend(server, concurrency=1, extra_body={"generation_config": json.dumps({"do_sample": True})})
    outs = be.generate([ask("Write a poem.", seed=s) for s in (5, 5)], Sampling(temperature=1.0, max_new_tokens=8))
    assert outs[0].text == outs[1].text


@pytest.mark.integration
def test_refused_request_fails_at_once_with_the_server_message(server):
    be = OpenAIBackend(server.url, "no-such-model", retries=3, backoff=2, progress=False)
    started = time.monotonic()
    with pytest.raises(RequestRejected, match="HTTP 400.*no-such-model"):
        be.generate([ask("Hi")], GREEDY)
    assert time.monotonic() - started < 5


@pytest.mark.integration
def test_server_killed_mid_run_keeps_the_finished_results(server, embedded_dir, tmp_path):
    doomed = Server(embedded_dir, tmp_path / "doomed.log")
    reqs = [ask(q, id=f"q{i}") for i, q in enumerate(QUESTIONS)]
    saved: dict[int, object] = {}

    def on_result(i, completion):
        saved[i] = completion  # what a pipeline step appends to its records
        if len(saved) == 2:
            doomed.kill()

    try:
        with pytest.raises(ServerError) as err:
            backend(doomed, retries=1, backoff=0.1).generate(reqs, GREEDY, on_result=on_result)
    finally:
        doomed.kill()
    assert doomed.url in str(err.value) and "base_url" in str(err.value)
    assert 2 <= len(saved) < len(reqs) and f"{len(saved)} of {len(reqs)} requests finished" in str(err.value)
    # Resume: only the missing requests are generated again, and nothing is lost.
    missing = [i for i in range(len(reqs)) if i not in saved]
    resumed = backend(server).generate([reqs[i] for i in missing], GREEDY)
    merged = {**saved, **dict(zip(missing, resumed))}
    reference = backend(server).generate(reqs, GREEDY)
    assert [merged[i].text for i in range(len(reqs))] == [o.text for o in reference]


@pytest.mark.integration
def test_agentwrite_runs_on_the_served_backend(server, tmp_path):
    """Plans with the "1." pre-fill and the sections go through the server; the folder is the same shape."""
    from sltk.agentwrite import AgentWrite
    from sltk.config import preset

    small = {"agentwrite.sections": 2, "agentwrite.max_sections": 2, "agentwrite.plan_max_new_tokens": 32,
             "agentwrite.words_per_section": 20, "agentwrite.min_section_words": 20}
    cfg = preset("smoke", **small).agentwrite
    be = backend(server, context=8192)
    items = [{"id": "a", "query": "Write a guide to growing tomatoes on a balcony.", "lang": "en"}]
    stats = AgentWrite(be, tmp_path, cfg, Sampling(max_new_tokens=64), progress=False).run(items)
    plans = [json.loads(line) for line in (tmp_path / "plans.jsonl").read_text().splitlines()]
    assert plans[0]["plan"].startswith("1.") and stats["prompts"] == 1
    if plans[0]["ok"]:
        sections = [json.loads(line) for line in (tmp_path / "sections.jsonl").read_text().splitlines()]
        assert [s["step"] for s in sections] == list(range(1, len(sections) + 1)) and sections
    assert stats["generated"]["calls"] >= 1


@pytest.mark.integration
def test_the_forced_choice_judge_falls_back_to_sampling_on_a_server_without_logprobs(server, caplog):
    from sltk import queries

    notes: dict = {}
    asked = ["Write an essay on the history of tea.", "Say hi."]
    verdicts = queries.suitable(backend(server), asked, "en", GREEDY, seeds=[1, 2], mode="choice", notes=notes)
    assert len(verdicts) == 2 and all(v in (True, False, None) for v in verdicts)
    assert notes["judge_mode"] == "sample (the server returned no log-probabilities)"
    assert "falls back to the sampled one" in caplog.text and "top_logprobs" in caplog.text
