"""Every prompt template of sltk, English and Chinese, in one place.

- Extension (the Extender's user message): :func:`extension_prompt`.
- Self-instruct (new writing instructions from the base model): :func:`self_instruct_messages`,
  stopped at :data:`SELF_INSTRUCT_STOP` and cleaned with :func:`parse_instruction`.
- Suitability judge (does an instruction call for a long text?): :func:`judge_messages`, read with
  :func:`parse_yes_no`.
- AgentWrite (plan, then write section by section): :func:`plan_messages`, :func:`section_messages`.

The Generator has no template: its user message is the raw query.
"""

from __future__ import annotations

import re

from .text import check_lang

__all__ = [
    "OMITTED",
    "OUTLINE_PREFILL",
    "SECTION_ECHO",
    "SELF_INSTRUCT_STOP",
    "extension_prompt",
    "judge_messages",
    "parse_instruction",
    "parse_yes_no",
    "plan_messages",
    "section_messages",
    "self_instruct_messages",
]



# --------------------------------------------------------------------------- extension

_EXTENSION = {
    "en": (
        "You are an expert in polishing and enriching writing. Below are an instruction and an "
        "original outline written for it. Rewrite the whole outline, from its first line to its last, "
        "as a longer and richer text: keep every part of it, in the same order, and expand each part "
        "with more information, concrete details and vivid description, or add new sections. Your "
        "task is not to continue the text but to enrich what is already there. Be creative and "
        "informative, avoid repetition and long-winded narration, and make the text as long, rich "
        "and engaging as you can. Reply with the expanded text only, with no remarks before or "
        "after it.\n"
        "\n"
        "Instruction: {query}\n"
        "Original outline:\n"
        "\n"
        "{text}"
    ),
    "zh": (
        "你是一位擅长润色和充实文章的写作专家。下面给出一条指令和根据它写成的原始大纲。请把整份大纲从第一行到最后一行"
        "改写成一篇更长、更丰富的文章：保留原文的每个部分，顺序不变，并为每个部分补充更多信息和具体细节，描写得更生动，"
        "也可以增加新的章节。你的任务不是接着往下写，而是丰富已有的内容。内容要有创意、信息量大，避免重复和冗长拖沓的叙述，"
        "尽可能让文章更长、更丰富、更吸引人。只输出扩写后的正文，前后不要加任何说明。\n"
        "\n"
        "指令：{query}\n"
        "原始大纲：\n"
        "\n"
        "{text}"
    ),
}


def extension_prompt(query: str, text: str, lang: str = "en") -> str:
    """The Extender's user message: enrich ``text`` (the "original outline") written for ``query``."""
    return _EXTENSION[check_lang(lang)].format(query=query, text=text)


# --------------------------------------------------------------------------- self-instruct

_SELF_INSTRUCT = {
    "en": (
        "Write user instructions, that is, requests a user might send to an AI writing "
        "assistant, that can guide the generation of long texts: long articles, stories, "
        "reports and other pieces that need more than 2,000 words. Every instruction must "
        "differ from the others in topic and in form."
    ),
    "zh": (
        "请写出一些用户指令，也就是用户可能向AI写作助手提出的请求。这些指令要能引导长文本的生成，"
        "例如长篇文章、故事、报告等需要2000字以上的作品。每条指令的主题和形式都要互不相同。"
    ),
}

_SLOT = {"en": "Instruction {n}:", "zh": "指令{n}："}
_SLOT_SPACE = {"en": " ", "zh": ""}

# Generation stops where the model opens any further item ("Instruction 4:", "Instructions 4:", ...).
SELF_INSTRUCT_STOP = {"en": "\nInstruction", "zh": "\n指令"}

# Where a completion runs on into the next numbered slot.
_NEXT_SLOT = {"en": re.compile(r"\n\s*instructions?\b", re.IGNORECASE), "zh": re.compile(r"\n\s*指令")}

_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」", "『": "』"}


def self_instruct_messages(examples: list[str], lang: str = "en") -> tuple[list[dict], str]:
    """Chat messages and assistant pre-fill asking the model for a third writing instruction.

    ``examples`` are exactly two seed instructions; each is put on one line (inner line breaks
    become spaces) so the numbered list stays one slot per line. Stop generation at
    ``SELF_INSTRUCT_STOP[lang]``.
    """
    check_lang(lang)
    if len(examples) != 2:
        raise ValueError(f"self-instruct needs exactly 2 example instructions, got {len(examples)}")
    lines = [
        _SLOT[lang].format(n=i) + _SLOT_SPACE[lang] + " ".join(ex.split())
        for i, ex in enumerate(examples, 1)
    ]
    prefill = "\n".join(lines + [_SLOT[lang].format(n=3)])
    return [{"role": "user", "content": _SELF_INSTRUCT[lang]}], prefill


def _strip_quotes(text: str) -> str:
    while len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def parse_instruction(completion: str, lang: str = "en") -> str:
    """The instruction written into slot 3: cut at the next numbered slot, strip spaces and quotes."""
    check_lang(lang)
    text = _NEXT_SLOT[lang].split(completion, 1)[0]
    return _strip_quotes(text.strip())


# --------------------------------------------------------------------------- judge

_JUDGE = {
    "en": (
        "Decide whether the instruction below is suitable for guiding the writing of a long "
        "article, for example one of more than 2,000 words. Answer only yes or no.\n"
        "\n"
        "<Instruction>\n"
        "{query}\n"
        "</Instruction>"
    ),
    "zh": (
        "请判断下面这条指令是否适合用来指导撰写一篇长文（例如2000字以上）。只回答是或否。\n"
        "\n"
        "<Instruction>\n"
        "{query}\n"
        "</Instruction>"
    ),
}


def judge_messages(query: str, lang: str = "en") -> list[dict]:
    """Chat messages asking whether ``query`` calls for a long article (answer yes or no)."""
    return [{"role": "user", "content": _JUDGE[check_lang(lang)].format(query=query)}]


_ANSWER_LABEL = re.compile(r"^(?:final\s+answer|answer|回答|答案|答)\s*[:：]\s*", re.IGNORECASE)
_LEADING_NOISE = re.compile(r"^[\W_]+")  # punctuation, quotes, markdown; CJK counts as a word char
_YES_EN = re.compile(r"^(?:yes|yeah|yep)\b")
_NO_EN = re.compile(r"^(?:no|nope|not)\b")
_YES_ZH = ("是", "适合", "可以")
_NO_ZH = ("否", "不")


def parse_yes_no(answer: str, lang: str = "en") -> bool | None:
    """True for a yes, False for a no, None when the answer is unclear.

    Looks at how the answer starts, ignoring case, leading punctuation or markdown, and a label
    such as "Answer:". English and Chinese answers are understood whatever ``lang`` is, since
    models sometimes reply in the other language.
    """
    check_lang(lang)
    text = _LEADING_NOISE.sub("", answer.strip()).lower()
    text = _LEADING_NOISE.sub("", _ANSWER_LABEL.sub("", text))
    if _YES_EN.match(text):
        return True
    if _NO_EN.match(text):
        return False
    if text.startswith("是否"):  # "whether": a restated question, not an answer
        return None
    if text.startswith(_NO_ZH):
        return False
    if text.startswith(_YES_ZH):
        return True
    return None


# --------------------------------------------------------------------------- AgentWrite

# LongWriter's planning request (METHOD 2.1): one line per section, its main point and word count.
_PLAN = {
    "en": (
        "Break the long writing task below into a plan of sections, one section per paragraph. "
        "Each line of the plan describes one section: its main point, specific and clear, and how "
        "many words it should have (between 200 and 1,000). Together the sections must cover the "
        "whole task; do not split it too finely. Write each line exactly in this form and output "
        "nothing else:\n"
        "Paragraph 1 - Main Point: [the main point of the section] - Word Count: [N] words\n"
        "\n"
        "Writing task:\n"
        "{query}"
    ),
    "zh": (
        "请把下面的长文写作任务拆分成若干部分的写作计划，每部分对应一段。计划的每一行描述一个部分：它的要点（具体明确）"
        "和字数要求（200到1000字之间）。所有部分合起来要覆盖整个任务，不要拆得过细。每行严格按下面的格式书写，"
        "不要输出其他内容：\n"
        "Paragraph 1 - Main Point: [该部分的要点] - Word Count: [N] words\n"
        "\n"
        "写作任务：\n"
        "{query}"
    ),
}

# For a model too small to follow that format: a numbered outline of headings, pre-filled with "1.".
_OUTLINE = {
    "en": (
        "Write an outline for the long text that the task below asks for: a numbered list of "
        "{sections} section headings in a sensible order, one short heading per line. Output only "
        "the list.\n"
        "\n"
        "Task: {query}"
    ),
    "zh": (
        "请为下面任务要求的长文写一份提纲：按合理顺序列出{sections}个章节标题，编号，每行一个简短标题。只输出这个列表。\n"
        "\n"
        "任务：{query}"
    ),
}
OUTLINE_PREFILL = "1."

_SECTION_HEAD = {
    "en": (
        "You are writing a long text for the instruction below, one section at a time, following "
        "the plan.\n\nInstruction: {query}\n\nPlan:\n{plan}\n\n"
    ),
    "zh": "你正在按照计划为下面的指令逐部分撰写一篇长文。\n\n指令：{query}\n\n计划：\n{plan}\n\n",
}
_SECTION_SO_FAR = {"en": "Text written so far:\n{so_far}\n\n", "zh": "已写的内容：\n{so_far}\n\n"}
_SECTION_TASK = {
    "en": (
        "Now write section {k} of {n} only: {point} Write about {words} words. You may begin with a "
        "short subtitle. {repeat}{closing} Reply with the text of this section only."
    ),
    "zh": ("现在只写第{k}部分（共{n}部分）：{point} 字数约{words}字。可以用一个简短的小标题开头。"
           "{repeat}{closing}只输出这一部分的正文。"),
}
# The task's own words, which a small model sometimes writes back before the section (agentwrite drops them).
SECTION_ECHO = re.compile(r"\bwrite about \d+ words\b|\byou may (?:begin|start) with a short subtitle\b"
                          r"|字数约\s*\d+\s*字|可以用一个简短的小标题开头", re.IGNORECASE)
_SECTION_NO_REPEAT = {"en": "Do not repeat anything the text so far already says. ",
                      "zh": "不要重复已写内容中的任何话。"}
_SECTION_NOTHING = {"en": "(nothing yet: this is the first section)", "zh": "（还没有：这是第一部分）"}
_SECTION_GOES_ON = {
    "en": "Do not conclude or sum up: the text goes on after this section.",
    "zh": "不要总结或收尾，因为这一部分之后文章还要继续。",
}
_SECTION_LAST = {"en": "This is the last section: bring the text to its end.", "zh": "这是最后一部分，请为全文收尾。"}
OMITTED = {"en": "[... the start of the text is left out ...]", "zh": "[……前文从略……]"}


def plan_messages(query: str, lang: str = "en", style: str = "longwriter", sections: int = 6) -> tuple[list[dict], str]:
    """Chat messages and assistant pre-fill that ask for a plan of `query`.

    ``style`` "longwriter": LongWriter's one line per section with main point and word count (no
    pre-fill). "outline": a numbered list of ``sections`` headings, pre-filled with ``1.``, for
    models that ignore the longer format.
    """
    check_lang(lang)
    if style == "longwriter":
        return [{"role": "user", "content": _PLAN[lang].format(query=query)}], ""
    if style == "outline":
        return [{"role": "user", "content": _OUTLINE[lang].format(query=query, sections=sections)}], OUTLINE_PREFILL
    raise ValueError(f"unknown plan style {style!r}; use 'longwriter' or 'outline'")


def section_messages(query: str, plan: str, k: int, n: int, point: str, words: int, so_far: str | None,
                     lang: str = "en") -> list[dict]:
    """Chat messages asking for section ``k`` of ``n`` (1-based) of the plan, given the text so far.

    ``so_far`` None leaves the text so far out (AgentWrite's "+Parallel" variant).
    """
    check_lang(lang)
    content = _SECTION_HEAD[lang].format(query=query, plan=plan)
    if so_far is not None:
        content += _SECTION_SO_FAR[lang].format(so_far=so_far.strip() or _SECTION_NOTHING[lang])
    closing = _SECTION_LAST[lang] if k == n else _SECTION_GOES_ON[lang]
    content += _SECTION_TASK[lang].format(k=k, n=n, point=point, words=words, closing=closing,
                                          repeat=_SECTION_NO_REPEAT[lang] if so_far else "")
    return [{"role": "user", "content": content}]
