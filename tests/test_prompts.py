import pytest

from sltk import prompts
from sltk.prompts import (
    SELF_INSTRUCT_STOP,
    extension_prompt,
    judge_messages,
    parse_instruction,
    parse_yes_no,
    self_instruct_messages,
)
from sltk.text import LANGUAGES


def test_langs():
    assert LANGUAGES == ("en", "zh")


@pytest.mark.parametrize(
    "call",
    [
        lambda: extension_prompt("q", "t", "fr"),
        lambda: self_instruct_messages(["a", "b"], "fr"),
        lambda: parse_instruction("x", "fr"),
        lambda: judge_messages("q", "fr"),
        lambda: parse_yes_no("yes", "fr"),
    ],
)
def test_unknown_language_names_the_valid_ones(call):
    with pytest.raises(ValueError) as err:
        call()
    assert "'fr'" in str(err.value) and "en" in str(err.value) and "zh" in str(err.value)


# --------------------------------------------------------------------------- extension


def test_extension_prompt_english_layout():
    query, text = "Write a travel guide to Lisbon.", "Para one.\n\nPara two."
    prompt = extension_prompt(query, text)
    assert prompt.endswith(f"\n\nInstruction: {query}\nOriginal outline:\n\n{text}")
    assert prompt.count("Instruction: ") == 1 and prompt.count("Original outline:") == 1
    head = prompt[: prompt.index("Instruction: ")]
    assert query not in head and text not in head
    for phrase in ("polishing", "not to continue", "add new sections", "repetition", "as long",
                   "from its first line to its last", "expanded text only"):
        assert phrase in head


def test_extension_prompt_chinese_layout():
    query, text = "写一篇关于长城的游记。", "第一段。\n\n第二段。"
    prompt = extension_prompt(query, text, "zh")
    assert prompt.endswith(f"\n\n指令：{query}\n原始大纲：\n\n{text}")
    head = prompt[: prompt.index("指令：")]
    assert "润色" in head and "不是接着往下写" in head and "避免重复" in head
    assert "Instruction" not in prompt


def test_extension_prompt_keeps_braces_verbatim():
    prompt = extension_prompt("Use {name} here", "x = {y}", "en")
    assert prompt.endswith("Instruction: Use {name} here\nOriginal outline:\n\nx = {y}")


def test_generator_has_no_template():
    assert "Generator" in prompts.__doc__ and "raw query" in prompts.__doc__


# --------------------------------------------------------------------------- self-instruct


def test_self_instruct_english():
    messages, prefill = self_instruct_messages(["Write a novel.", "Draft a report."])
    assert prefill == "Instruction 1: Write a novel.\nInstruction 2: Draft a report.\nInstruction 3:"
    assert [m["role"] for m in messages] == ["user"]
    user = messages[0]["content"]
    assert "instructions" in user and "2,000 words" in user and "Write a novel." not in user


def test_self_instruct_chinese():
    messages, prefill = self_instruct_messages(["写一部小说。", "写一份报告。"], "zh")
    assert prefill == "指令1：写一部小说。\n指令2：写一份报告。\n指令3："
    assert "指令" in messages[0]["content"] and "2000字以上" in messages[0]["content"]


def test_self_instruct_puts_each_example_on_one_line():
    _, prefill = self_instruct_messages(["  Line one\nline two  ", "B"])
    assert prefill.split("\n") == ["Instruction 1: Line one line two", "Instruction 2: B", "Instruction 3:"]


@pytest.mark.parametrize("examples", [[], ["only one"], ["a", "b", "c"]])
def test_self_instruct_needs_two_examples(examples):
    with pytest.raises(ValueError, match="exactly 2"):
        self_instruct_messages(examples)


def test_stop_strings_catch_any_further_slot():
    assert SELF_INSTRUCT_STOP == {"en": "\nInstruction", "zh": "\n指令"}
    for lang in LANGUAGES:
        _, prefill = self_instruct_messages(["a", "b"], lang)
        open_slot = prefill.rsplit("\n", 1)[1]
        assert ("\n" + open_slot.replace("3", "4")).startswith(SELF_INSTRUCT_STOP[lang])
    assert "\nInstructions 4:".startswith(SELF_INSTRUCT_STOP["en"])


@pytest.mark.parametrize(
    "completion, lang, expected",
    [
        (" Write a 3,000-word essay on tides.", "en", "Write a 3,000-word essay on tides."),
        (" Write a story.\nInstruction 4: Another one", "en", "Write a story."),
        (" Write a story.\nInstructions 4: Another one", "en", "Write a story."),
        (" Write a story.\n instruction 5: Another one", "en", "Write a story."),
        (' "Describe a storm at sea."  ', "en", "Describe a storm at sea."),
        ("“Plan a garden.”", "en", "Plan a garden."),
        ('"Hamlet" is a play; analyse it.', "en", '"Hamlet" is a play; analyse it.'),
        ("First line\nsecond line.\n", "en", "First line\nsecond line."),
        ("   \n", "en", ""),
        ("写一篇科幻小说。\n指令4：写一首诗", "zh", "写一篇科幻小说。"),
        ("「介绍一座城市的历史。」", "zh", "介绍一座城市的历史。"),
    ],
)
def test_parse_instruction(completion, lang, expected):
    assert parse_instruction(completion, lang) == expected


# --------------------------------------------------------------------------- judge


def test_judge_english():
    messages = judge_messages("Write a long history of Rome.")
    assert [m["role"] for m in messages] == ["user"]
    content = messages[0]["content"]
    assert "<Instruction>\nWrite a long history of Rome.\n</Instruction>" in content
    assert "yes or no" in content and "2,000 words" in content


def test_judge_chinese():
    content = judge_messages("写一部长篇小说。", "zh")[0]["content"]
    assert "<Instruction>\n写一部长篇小说。\n</Instruction>" in content
    assert "是或否" in content and "2000字以上" in content


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Yes", True),
        ("yes", True),
        ("Yes.", True),
        ("YES!", True),
        ("yes, it is", True),
        ("**Yes**", True),
        ('"Yes"', True),
        ("Answer: yes", True),
        ("\n  Yes, the instruction asks for a long piece.", True),
        ("No", False),
        ("no.", False),
        ("No, it is too short.", False),
        ("Not suitable.", False),
        ("是", True),
        ("是的", True),
        ("是。", True),
        ("回答：是", True),
        ("否", False),
        ("否。", False),
        ("不是", False),
        ("不适合。", False),
        ("", None),
        ("Maybe", None),
        ("I think nothing is missing", None),
        ("Nothing to say", None),
        ("Yesterday I wrote", None),
        ("是否适合？", None),
    ],
)
def test_parse_yes_no(answer, expected):
    assert parse_yes_no(answer, "en") is expected
    assert parse_yes_no(answer, "zh") is expected
