"""AgentWrite: the plan parser on plans real models wrote, assembly, the write loop's batching and resume."""

import json
from pathlib import Path

import pytest

from sltk import agentwrite, prompts, text
from sltk.agentwrite import AgentWrite, Step, parse_plan
from sltk.chat import Completion
from sltk.config import AgentWriteConfig, Sampling, preset

DATA = Path(__file__).parent / "data"


# -- the parser -------------------------------------------------------------------------------

def test_longwriter_format():
    plan = ("Paragraph 1 - Main Point: Open on the harbour at dawn - Word Count: 400 words\n\n"
            "Paragraph 2 - Main Point: The storm arrives - Word Count: 1,200 words\n"
            "Paragraph 3 - Main Point: The rescue - Word Count: 150 words")
    assert parse_plan(plan, 300, 200, 1000) == [Step("Open on the harbour at dawn", 400),
                                                Step("The storm arrives", 1000), Step("The rescue", 200)]


@pytest.mark.parametrize("plan", [
    "1. Intro\n2. Body\n3. End",
    "1) Intro\n2) Body\n3) End",
    "(1) Intro\n(2) Body\n(3) End",
    "Section 1: Intro\nSection 2: Body\nSection 3: End",
    "**1. Intro**\n**2. Body**\n**3. End**",
    "- Intro\n- Body\n* End",
    "## 1. Intro\n## 2. Body\n## 3. End",
    "Here is an outline for your essay:\n\n1. Intro\n2. Body\n3. End\n\nI hope this outline helps!",
    "1. Intro\n2. Body\n2. Body\n3. End",  # the same heading twice
])
def test_numbering_bullets_prose_and_duplicates(plan):
    assert [s.point for s in parse_plan(plan)] == ["Intro", "Body", "End"]
    assert all(s.words == 300 for s in parse_plan(plan))  # no word count: the default


def test_word_counts_in_other_places_and_sub_points():
    plan = ("1. The market (about 250 words)\n   - stalls and smells\n   - the crowd\n"
            "2. The trader [600 words]\n3. Night falls - 300-400 words\n第4段 - 要点：结尾 - 字数：500字")
    steps = parse_plan(plan)
    assert [s.words for s in steps] == [250, 600, 300, 500]
    assert steps[0].point == "The market; stalls and smells; the crowd"
    assert [s.point for s in steps[1:]] == ["The trader", "Night falls", "结尾"]


def test_unnumbered_lines_are_the_steps_when_nothing_is_numbered():
    assert [s.point for s in parse_plan("Opening scene\nThe journey\nHome again")] == [
        "Opening scene", "The journey", "Home again"]


def test_plans_the_embedded_model_wrote():
    """12 outlines SmolLM2-135M wrote when pre-filled with "1." (asked for 6: 3 to 15 items, some cut off)."""
    rows = [json.loads(line) for line in (DATA / "embedded_outline_plans.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    for r in rows:
        steps = parse_plan(r["plan"], 220, 150, 300)
        assert len(steps) >= 3, r["id"]  # too many are cut to max_sections by the run
        for s in steps:
            assert s.point and s.words == 220
            assert not s.point[:3].strip().rstrip(".").isdigit(), s.point  # numbering removed
        assert len({s.point for s in steps}) == len(steps)
    # a sub-bullet is joined to its heading, not made a section of its own
    boredom = next(r for r in rows if r["plan"].startswith("1. Definition"))
    assert parse_plan(boredom["plan"])[0].point.startswith("Definition - What is boredom?; Definition:")


def test_render_plan():
    assert agentwrite.render_plan([Step("Intro", 200), Step("End", 300)]) == (
        "1. Intro (about 200 words)\n2. End (about 300 words)")


# -- sections and assembly --------------------------------------------------------------------

def test_labels_are_removed_and_subtitles_kept():
    assert agentwrite.strip_labels("Paragraph 2:\nThe rain came.") == "The rain came."
    assert agentwrite.strip_labels("**Section 3 - The Flood**\nWater rose.") == "The Flood**\nWater rose."
    assert agentwrite.strip_labels("Section 3 of 5: The Flood\nWater rose.") == "The Flood\nWater rose."
    assert agentwrite.strip_labels("The paragraph 2 of the law says so.") == "The paragraph 2 of the law says so."
    # the embedded model writing its request back before the section (a reference run's section, shortened)
    echoed = ("A Mysterious Lost City: The lost city of Eldaroth is said to be built by ancient beings. Write about "
              "220 words. You may start with a short subtitle:\n\nIn the heart of a forgotten land lies a city.")
    assert agentwrite.strip_labels(echoed) == "In the heart of a forgotten land lies a city."
    assert agentwrite.strip_labels("第2部分：字数约300字。\n\n城里下着雨。") == "城里下着雨。"
    assert agentwrite.strip_labels("Write about the sea.\n\nWaves.") == "Write about the sea.\n\nWaves."
    assert agentwrite.assemble(["Paragraph 1\nA.", "", "Paragraph 2: B."]) == "A.\n\nB."


def test_paragraphs_that_talk_to_the_user_are_dropped():
    # what the embedded model said to the user inside sections of reference runs (some shortened)
    signed_off = "The city waits.\n\nThis concludes the section. You can now proceed to the next part of the text."
    assert agentwrite.drop_talk(signed_off) == "The city waits."
    talk = ("I'm ready to help you craft your next piece. Please share the text.\n\nHe woke.\n\nHere is a "
            "continuation of the text:\n\nShe left.\n\nHere's a rewritten version of the original text with "
            "suggested edits:\n\nThey met.\n\nYour essay concludes by emphasizing the importance of stories.")
    assert agentwrite.drop_talk(talk) == "He woke.\n\nShe left.\n\nThey met."
    assert agentwrite.drop_talk("I'm ready to help you craft your next draft. Please share it now!") == ""
    # the text itself stays: a long paragraph, dialogue, first-person resolve, a list that is not talk
    story = "The guide said the next section of the trail was dry. " + "They walked on through the dust. " * 10
    kept = (f"{story.strip()}\n\n\"Please, wait for me,\" she called.\n\nI am ready to take on any challenge."
            "\n\n1. Flour\n2. Water")
    assert agentwrite.drop_talk(kept) == kept
    zh = "雨停了。\n\n本部分到此结束，请继续写下一部分。\n\n一部分人留下了。"
    assert agentwrite.drop_talk(zh) == "雨停了。\n\n一部分人留下了。"


def test_trim_to_sentence():
    assert agentwrite.trim_to_sentence("One. Two! Three and") == "One. Two!"
    assert agentwrite.trim_to_sentence('He said "go." Then') == 'He said "go."'
    assert agentwrite.trim_to_sentence("no end at all") == ""


SENTENCE = "the old lighthouse keeper climbed the winding stairs every single night without fail"


def test_a_section_that_repeats_the_text_so_far_is_found_and_cut():
    so_far = f"It began quietly. {SENTENCE}."
    fresh = "A new paragraph about the sea and the gulls that circle the harbour wall at noon."
    assert not agentwrite.repeats(so_far, fresh)
    looping = f"{fresh}\n\nThen {SENTENCE} again."
    assert agentwrite.repeats(so_far, looping)
    assert agentwrite.clean_part(so_far, looping) == fresh
    assert not text.has_repeated_ngram(agentwrite.assemble([so_far, agentwrite.clean_part(so_far, looping)]))


def test_the_text_so_far_loses_its_front_with_a_marker():
    so_far = "\n\n".join(f"Paragraph number {i} has exactly seven words." for i in range(10))
    shown = agentwrite.shown_text(so_far, 20)
    assert shown.startswith(prompts.OMITTED["en"])
    assert shown.endswith("Paragraph number 9 has exactly seven words.")
    assert text.count_words(shown.replace(prompts.OMITTED["en"], "")) <= 20
    assert agentwrite.shown_text(so_far, None) == so_far


def test_section_prompts():
    first = prompts.section_messages("Q", "1. A\n2. B", 1, 2, "A", 200, "")[0]["content"]
    assert "nothing yet" in first and "section 1 of 2" in first and "Do not conclude" in first
    last = prompts.section_messages("Q", "1. A\n2. B", 2, 2, "B", 200, "Text A.")[0]["content"]
    assert "Text A." in last and "last section" in last and "Do not repeat" in last
    parallel = prompts.section_messages("Q", "1. A\n2. B", 2, 2, "B", 200, None)[0]["content"]
    assert "so far" not in parallel
    messages, prefill = prompts.plan_messages("Q", style="outline", sections=5)
    assert prefill == "1." and "5 section headings" in messages[0]["content"]
    assert "Word Count" in prompts.plan_messages("Q")[0][0]["content"]
    with pytest.raises(ValueError, match="plan style"):
        prompts.plan_messages("Q", style="tree")


# -- the write loop, on a scripted backend (the real model is tested below) --------------------

class ScriptedBackend:
    """Writes an outline for plan requests and a distinct sentence per section; logs every call."""

    context = 4096

    def __init__(self, fail_after: int | None = None, empty: set | None = None, talk_once: set | None = None,
                 cut_off: set | None = None):
        self.calls: list[list[str]] = []
        self.fail_after, self.empty, self.talk_once = fail_after, empty or set(), set(talk_once or ())
        self.cut_off = cut_off or set()

    def generate(self, reqs, sampling, desc=""):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls.append([r.id for r in reqs])
        outs = []
        for r in reqs:
            if r.prefill == prompts.OUTLINE_PREFILL:
                body = " Opening\n2. Middle part\n3. Closing part"
            elif r.id in self.empty:
                body = ""
            elif r.id in self.talk_once:  # the first try talks to the user instead of writing
                self.talk_once.discard(r.id)
                body = "I'm ready to help you craft your next draft. What's the next part? Please share it now!"
            else:
                body = f"The text of {r.id} is written with seed {r.seed} ends here."
            finish = "stop"
            if r.id in self.cut_off:  # stopped by its token cap in mid-sentence
                body, finish = body + " And then the", "length"
            outs.append(Completion(body, len(body.split()), finish, 10, r.id))
        return outs


CFG = AgentWriteConfig(plan_style="outline", sections=3, min_sections=2, max_sections=3, words_per_section=50,
                       min_section_words=10, max_section_words=100)
ITEMS = [{"id": f"p{i}", "query": f"Write about topic {i}.", "lang": "en"} for i in range(3)]


def test_step_k_of_every_prompt_is_one_batch(tmp_path):
    backend = ScriptedBackend()
    stats = AgentWrite(backend, tmp_path, CFG, Sampling(), progress=False).run(ITEMS)
    assert backend.calls[0] == ["p0", "p1", "p2"]  # the plans
    assert backend.calls[1:] == [[f"p{i}-s{k:02d}" for i in range(3)] for k in (1, 2, 3)]
    assert stats["ok"] == 3 and stats["sections"] == 9
    data = [json.loads(line) for line in (tmp_path / "dataset.jsonl").read_text().splitlines()]
    assert [d["id"] for d in data] == ["p0", "p1", "p2"]
    assert data[0]["messages"][0] == {"role": "user", "content": "Write about topic 0."}
    assert data[0]["messages"][1]["content"].count("\n\n") == 2  # three sections


def test_parallel_writes_every_section_at_once(tmp_path):
    backend = ScriptedBackend()
    cfg = AgentWriteConfig(**{**CFG.__dict__, "parallel": True})
    AgentWrite(backend, tmp_path, cfg, Sampling(), progress=False).run(ITEMS)
    assert len(backend.calls) == 2 and len(backend.calls[1]) == 9


def test_killed_run_resumes_without_repeating_a_finished_call(tmp_path):
    full = ScriptedBackend()
    AgentWrite(full, tmp_path / "full", CFG, Sampling(), progress=False).run(ITEMS)
    for kill_at in range(1, len(full.calls)):
        folder = tmp_path / f"kill{kill_at}"
        with pytest.raises(KeyboardInterrupt):
            AgentWrite(ScriptedBackend(fail_after=kill_at), folder, CFG, Sampling(), progress=False).run(ITEMS)
        again = ScriptedBackend()
        AgentWrite(again, folder, CFG, Sampling(), progress=False).run(ITEMS)
        assert again.calls == full.calls[kill_at:]  # only what had not finished
        for name in ("texts.jsonl", "dataset.jsonl"):
            assert (folder / name).read_text() == (tmp_path / "full" / name).read_text()


def test_a_torn_last_line_is_repaired_on_resume(tmp_path):
    AgentWrite(ScriptedBackend(), tmp_path, CFG, Sampling(), progress=False).run(ITEMS)
    sections = tmp_path / "sections.jsonl"
    lines = sections.read_text().splitlines(keepends=True)
    sections.write_text("".join(lines[:-1]) + lines[-1][:20])  # a write cut short
    again = ScriptedBackend()
    AgentWrite(again, tmp_path, CFG, Sampling(), progress=False).run(ITEMS)
    assert again.calls == [["p2-s03"]]


def test_an_empty_reply_drops_the_sample(tmp_path):
    backend = ScriptedBackend(empty={"p1-s02"})
    stats = AgentWrite(backend, tmp_path, CFG, Sampling(), progress=False).run(ITEMS)
    assert stats["ok"] == 2 and stats["failed"] == {"empty": 1}
    assert "p1-s03" not in backend.calls[-1]


def test_a_section_that_only_talks_to_the_user_is_written_again(tmp_path):
    backend = ScriptedBackend(talk_once={"p1-s02"})
    cfg = AgentWriteConfig(**{**CFG.__dict__, "section_tries": 1})
    stats = AgentWrite(backend, tmp_path, cfg, Sampling(), progress=False).run(ITEMS)
    assert ["p1-s02"] in backend.calls  # the one section, once more
    assert stats["ok"] == 3
    text_p1 = [json.loads(line) for line in (tmp_path / "dataset.jsonl").read_text().splitlines()][1]
    assert "The text of p1-s02" in text_p1["messages"][1]["content"]
    assert "Please share" not in text_p1["messages"][1]["content"]
    assert stats["sections_talk_dropped"] == 0  # the kept try wrote the section
    once = ScriptedBackend(talk_once={"p1-s02"}, cut_off={"p0-s01"})  # a section cut back is not talk
    assert AgentWrite(once, tmp_path / "once", CFG, Sampling(), progress=False).run(ITEMS)["sections_talk_dropped"] == 1


def test_repeated_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unique ids"):
        AgentWrite(ScriptedBackend(), tmp_path, CFG, Sampling(), progress=False).run(ITEMS + ITEMS[:1])


def test_presets_scale_agentwrite():
    default = preset("paper").agentwrite
    assert (default.plan_style, default.max_sections, default.min_section_words, default.max_section_words) == (
        "longwriter", 50, 200, 1000)
    demo = preset("cpu-demo").agentwrite
    assert demo.plan_style == "outline" and demo.section_tries >= 1 and demo.cut_repeats


# -- the real embedded model ------------------------------------------------------------------

@pytest.mark.integration
def test_agentwrite_on_the_embedded_model(smol_fp32, tmp_path):
    from sltk.backends import HFBackend

    cfg = preset("smoke").agentwrite
    backend = HFBackend(smol_fp32, batch_size=8, progress=False)
    items = [{"id": "a", "query": "Write a guide to keeping bees in a city garden.", "lang": "en"},
             {"id": "b", "query": "Write a story about a lost letter that arrives fifty years late.", "lang": "en"}]
    stats = AgentWrite(backend, tmp_path, cfg, Sampling(max_new_tokens=96), progress=False).run(items)
    plans = [json.loads(line) for line in (tmp_path / "plans.jsonl").read_text().splitlines()]
    assert [p["id"] for p in plans] == ["a", "b"]
    sections = [json.loads(line) for line in (tmp_path / "sections.jsonl").read_text().splitlines()]
    assert sections and all(s["tokens"] <= agentwrite.section_cap(cfg.max_section_words, cfg) for s in sections)
    texts = [json.loads(line) for line in (tmp_path / "texts.jsonl").read_text().splitlines()]
    for t in texts:
        if t["text"]:
            assert t["words"] == text.count_words(t["text"]) > 0
    assert stats["generated"]["tokens"] > 0


def test_headings_come_from_the_plan_lines():
    assert agentwrite.heading("Introduction: the harbour at dawn and who works there") == "Introduction"
    assert agentwrite.heading("The Master's Secret") == "The Master's Secret"
    assert agentwrite.heading("**Early years** - a childhood by the sea") == "Early years"
    assert agentwrite.heading(" ".join(["word"] * 20)) is None  # a sentence, not a title
    body = agentwrite.assemble(["Section 1: The tide rose.", "", "It fell."], ["Dawn", "Noon", None])
    assert body == "## Dawn\n\nThe tide rose.\n\nIt fell."  # an empty section drops its heading too
    assert agentwrite.assemble(["A.", "B."]) == "A.\n\nB."
    assert agentwrite.headings(["Dawn: the quay", "Noon"]) == ["Dawn", "Noon"]
    assert agentwrite.headings(["Dawn", " ".join(["word"] * 20)]) is None
