import random

import pytest

from sltk.text import (
    CONVENTIONS,
    FILTERS,
    META_WORDS_EN,
    META_WORDS_ZH,
    check_filters,
    clean_prefix,
    count_words,
    detect_language,
    drop_lines,
    ends_properly,
    first_half,
    has_meta_commentary,
    has_repeated_ngram,
    join_units,
    keep_probabilities,
    length_biased_sample,
    repeated_ngram_rate,
    split_units,
    split_units_with_sep,
)

# 72 distinct CJK characters, used to build Chinese text with no accidental repeats.
THOUSAND = (
    "天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往秋收冬藏闰余成岁律吕调阳"
    "云腾致雨露结为霜金生丽水玉出昆冈剑号巨阙珠称夜光果珍李柰菜重芥姜海咸河淡鳞潜羽翔"
)


class FixedRng:
    """Stand-in for random.Random that returns preset values from random()."""

    def __init__(self, values):
        self._values = iter(values)

    def random(self):
        return next(self._values)


def test_thousand_is_distinct():
    assert len(THOUSAND) == len(set(THOUSAND)) == 72


# --------------------------------------------------------------------------- counting


def test_sl_english_tokens_include_digits_and_punctuation():
    assert count_words("I don't have 3 cats, 42 dogs.") == 7
    assert count_words("Hello - world") == 3


def test_lw_english_splits_apostrophes_and_skips_digits():
    # I, don, t, have, cats, dogs
    assert count_words("I don't have 3 cats, 42 dogs.", "longwriter") == 6
    assert count_words("don't", "longwriter") == 2
    assert count_words("1 2 3 42 , . !", "longwriter") == 0


def test_sl_counts_cjk_punctuation_as_words():
    # 我 爱 编 程 ， 真 的 ！ = 8 wide characters (U+FF0C, U+FF01 are fullwidth), plus Python.
    assert count_words("我爱 Python 编程\uff0c真的\uff01") == 9
    # 「 你 好 」 、 再 见 。: 、 is U+3001, 。 is U+3002, 「」 are U+300C/U+300D.
    assert count_words("「你好」、再见。") == 8
    assert count_words("Hello, world. 你好。") == 5


def test_lw_counts_only_ideographs_and_latin_runs():
    assert count_words("我爱 Python 编程，真的！", "longwriter") == 7
    assert count_words("「你好」、再见。", "longwriter") == 4
    assert count_words("Hello, world. 你好。", "longwriter") == 4


def test_lw_regex_is_applied_verbatim():
    # With Unicode \b, latin letters glued to an ideograph or a digit are not a match.
    assert count_words("我爱Python编程", "longwriter") == 4
    assert count_words("abc123 def", "longwriter") == 1


def test_sl_wide_chars_split_glued_latin():
    # 我 爱 编 程 are words and become spaces, so Python is a separate token.
    assert count_words("我爱Python编程") == 5


def test_sl_ideographic_space_counts_literally():
    # U+3000 lies in U+3000–U+303F, so the convention counts it as a word.
    assert count_words("a\u3000b") == 3
    assert count_words("a\u3000b", "longwriter") == 2


def test_count_empty():
    assert count_words("") == 0
    assert count_words("   \n\t", "longwriter") == 0


def test_aliases():
    text = "I don't 知道。"
    assert count_words(text) == count_words(text, "self-lengthen") == 5
    assert count_words(text, "longwriter") == 5


def test_unknown_convention_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        count_words("x", "chars")
    for name in CONVENTIONS:
        assert name in str(err.value)
    assert set(CONVENTIONS) == {"self-lengthen", "longwriter"}


# --------------------------------------------------------------------------- language


def test_detect_plain_languages():
    assert detect_language("这是一个中文句子。") == "zh"
    assert detect_language("This is an English sentence.") == "en"
    assert detect_language("") == "en"
    assert detect_language("12345 !!!") == "en"


def test_detect_mixed_text():
    assert detect_language("我们使用 Python 和 PyTorch 来训练模型。") == "zh"
    english = (
        "The word 你好 means hello in Chinese and is used widely across the world."
    )
    assert detect_language(english) == "en"


def test_detect_share_threshold():
    # 1 ideograph of 5 non-space characters = 20% -> zh (latin words: 1, not fewer).
    assert detect_language("abcd 中") == "zh"
    # 1 of 6 < 20% and 1 ideograph is not more than 1 latin word -> en.
    assert detect_language("abcde 中") == "en"


def test_detect_more_ideographs_than_latin_words():
    # 2 of 14 non-space characters (< 20%), but 2 ideographs > 1 latin word -> zh.
    assert detect_language("中文 abcdefghijkl") == "zh"


# --------------------------------------------------------------------------- splitting


def test_split_paragraphs_on_blank_lines():
    text = "a1\na2  \n\n  \n\nb\n \t\nc\n\n"
    units, sep = split_units_with_sep(text)
    assert units == ["a1\na2", "b", "c"]
    assert sep == "\n\n"
    assert split_units(text) == units


def test_split_falls_back_to_lines_with_two_paragraphs():
    units, sep = split_units_with_sep("A\nB\n\nC  \nD\n")
    assert units == ["A", "B", "C", "D"]
    assert sep == "\n"


def test_split_single_paragraph_gives_lines():
    units, sep = split_units_with_sep("one\n  two\n\n")
    assert units == ["one", "  two"]
    assert sep == "\n"


def test_split_empty():
    assert split_units("") == []
    assert split_units(" \n\n ") == []


def test_join_units():
    assert join_units(["a", "b"], "\n") == "a\nb"
    assert join_units(["a", "b"]) == "a\n\nb"


def test_first_half_paragraphs():
    text = "\n\n".join(f"P{i}" for i in range(1, 6))
    assert first_half(text) == "P1\n\nP2"


def test_first_half_lines():
    assert first_half("l1\nl2\nl3\nl4") == "l1\nl2"
    assert first_half("only one") == ""


def test_drop_lines_extremes():
    text = "a\n\nb\nc"
    assert drop_lines(text, 1.0, random.Random(0)) == text
    assert drop_lines(text, 0.0, random.Random(0)) == ""


def test_drop_lines_uses_one_draw_per_line():
    rng = FixedRng([0.1, 0.9, 0.5, 0.85])
    assert drop_lines("a\nb\nc\nd", 0.8, rng) == "a\nc"


def test_drop_lines_share_and_determinism():
    lines = [f"line{i}" for i in range(10000)]
    text = "\n".join(lines)
    out = drop_lines(text, 0.8, random.Random(123))
    kept = out.split("\n")
    assert 0.78 < len(kept) / len(lines) < 0.82
    positions = [int(line[4:]) for line in kept]
    assert positions == sorted(positions)
    assert drop_lines(text, 0.8, random.Random(123)) == out
    assert drop_lines(text, 0.8, random.Random(124)) != out


def test_drop_lines_rejects_bad_probability():
    with pytest.raises(ValueError):
        drop_lines("a", 1.5)
    with pytest.raises(ValueError):
        drop_lines("a", -0.1)


# --------------------------------------------------------------------------- ending


@pytest.mark.parametrize(
    "text",
    [
        "Hello.",
        "Done!  \n",
        "Really?!",
        "Wait...",
        'He said "yes."',
        "He said 'no!'",
        "(See above.)",
        "[Done.]",
        "他来了。",
        "真的吗？",
        "太好了！",
        "结束了……",
        "他说：“好的。”",
        "「完了！」",
        "《终。》",
        "【完。】",
        "（完。）",
        "『好。』",
        "He said ‘fine.’",
    ],
)
def test_ending_accepts(text):
    assert ends_properly(text)


@pytest.mark.parametrize(
    "text",
    [
        "Hello",
        "Hello,",
        "",
        "   \n",
        "Item 3",
        "Note:",
        "a;",
        "end -",
        "end —",
        "他来了，",
        "他说：",
        'He said "yes"',
        "他说“好”",
        "(see above)",
        '"',
    ],
)
def test_ending_rejects(text):
    assert not ends_properly(text)


def test_ending_same_marks_for_both_languages():
    assert ends_properly("The end.", lang="zh")
    assert ends_properly("The end!", lang="zh")
    assert ends_properly("完了。", lang="en")
    assert not ends_properly("The end", lang="zh")


def test_ending_rejects_unknown_language():
    with pytest.raises(ValueError):
        ends_properly("Hi.", lang="fr")


# --------------------------------------------------------------------------- repetition

P10 = "the quick brown fox jumps over the lazy dog again"
P9 = "the quick brown fox jumps over the lazy dog"


def test_repeated_10gram_english():
    text = f"alpha {P10} beta gamma {P10} delta."
    assert has_repeated_ngram(text, lang="en")
    assert has_repeated_ngram(text)  # detected as English


def test_repeated_9gram_not_flagged_by_default():
    text = f"alpha {P9} beta gamma {P9} delta."
    assert not has_repeated_ngram(text, lang="en")
    assert has_repeated_ngram(text, lang="en", n=9)


def test_repetition_english_is_case_insensitive():
    text = f"alpha {P10} beta gamma {P10.upper()} delta."
    assert has_repeated_ngram(text, lang="en")


def test_repetition_english_keeps_punctuation_on_tokens():
    # "again." and "again" are different tokens, so no 10-gram repeats.
    text = f"alpha {P10}. beta gamma {P10} delta"
    assert not has_repeated_ngram(text, lang="en")


def test_repetition_english_whitespace_kinds():
    text = f"alpha {P10} beta\n\ngamma " + P10.replace(" ", "\n") + " delta."
    assert has_repeated_ngram(text, lang="en")


def test_repeated_13chars_chinese():
    span = THOUSAND[20:33]
    text = THOUSAND[:40] + "，" + THOUSAND[50:60] + span + THOUSAND[60:72] + "。"
    assert has_repeated_ngram(text, lang="zh")
    assert has_repeated_ngram(text)  # detected as Chinese


def test_repeated_12chars_chinese_not_flagged():
    span = THOUSAND[20:32]
    text = THOUSAND[:40] + "，" + THOUSAND[50:60] + span + THOUSAND[60:72] + "。"
    assert not has_repeated_ngram(text, lang="zh")
    assert has_repeated_ngram(text, lang="zh", n=12)


def test_repetition_chinese_ignores_whitespace():
    span = THOUSAND[20:33]
    spaced = " ".join(span[:6]) + "\n" + span[6:]
    text = THOUSAND[:40] + "，" + THOUSAND[50:60] + spaced + THOUSAND[60:72] + "。"
    assert has_repeated_ngram(text, lang="zh")


def test_repetition_chinese_mixed_ascii_span():
    span = "H100显卡GPU用了3天"
    assert len(span) == 13
    text = f"我们在实验室里用{span}完成训练。他们在公司用{span}才做完。"
    assert has_repeated_ngram(text, lang="zh")
    shorter = "我们在实验室里用H100显卡GPU用了3天完成训练。他们在公司拿H100显卡GPU用了3周才做完。"
    assert not has_repeated_ngram(shorter, lang="zh")


def test_repetition_chinese_long_ascii_runs_are_characters():
    # An ASCII run is not one token: "transformersaccelerate" (whitespace removed)
    # repeats 22 characters, which holds many 13-character repeats.
    text = (
        "第一步是运行 pip install transformers accelerate 命令。"
        "接着检查环境变量是否正确。最后提醒大家：transformers accelerate 两个库都要装好。"
    )
    assert has_repeated_ngram(text, lang="zh")
    control = (
        "第一步是运行 pip install transformers accelerate 命令。"
        "接着检查环境变量是否正确。最后提醒大家：transformers 库要装好。"
    )
    assert not has_repeated_ngram(control, lang="zh")


def test_repeated_ngram_rate():
    assert repeated_ngram_rate("a b c a b c", lang="en", n=3) == pytest.approx(0.25)
    assert repeated_ngram_rate("a a a a", lang="en", n=1) == pytest.approx(0.75)
    assert repeated_ngram_rate("好好 好好好", lang="zh", n=2) == pytest.approx(0.75)
    assert repeated_ngram_rate("a b", lang="en", n=3) == 0.0
    assert repeated_ngram_rate("", lang="en") == 0.0
    assert repeated_ngram_rate(THOUSAND, lang="zh") == 0.0


def test_repeated_ngram_rate_defaults():
    text = f"alpha {P10} beta gamma {P10} delta."
    # 24 tokens -> 15 positions of 10-grams, one of which repeats.
    assert repeated_ngram_rate(text, lang="en") == pytest.approx(1 / 15)


def test_ngram_rejects_bad_n():
    with pytest.raises(ValueError):
        has_repeated_ngram("a b", lang="en", n=0)


# --------------------------------------------------------------------------- meta

BODY = [
    "Line one is here.",
    "Line two is here.",
    "Line three is here.",
    "Line four is here.",
    "Line five is here.",
    "Line six is here.",
    "Line seven is here.",
]


def _with(index, sentence):
    lines = list(BODY)
    lines[index] = sentence
    return "\n".join(lines)


def test_meta_word_lists():
    for word in (
        "revised",
        "revision",
        "version",
        "response",
        "paragraph",
        "revisions",
        "versions",
        "responses",
        "paragraphs",
    ):
        assert word in META_WORDS_EN
    for word in (
        "修改",
        "修订",
        "改写",
        "版本",
        "回答",
        "回复",
        "段落",
        "扩写",
        "润色",
    ):
        assert word in META_WORDS_ZH


def test_meta_first_line_revised_version():
    assert has_meta_commentary(_with(0, "Here is the revised version:"), lang="en")
    assert has_meta_commentary(_with(0, "Here is the revised version:"))


def test_meta_case_insensitive():
    assert has_meta_commentary(_with(0, "Response to your request"), lang="en")
    assert has_meta_commentary(_with(1, "THREE PARAGRAPHS FOLLOW"), lang="en")


def test_meta_plurals_and_tail():
    assert has_meta_commentary(_with(6, "I hope these revisions help."), lang="en")
    assert has_meta_commentary(_with(5, "Both versions work."), lang="en")
    assert has_meta_commentary(_with(4, "That is my response."), lang="en")


def test_meta_whole_words_only():
    assert not has_meta_commentary(_with(0, "This is a responsible choice."), lang="en")
    assert not has_meta_commentary(
        _with(1, "Their correspondence lasted years."), lang="en"
    )
    assert not has_meta_commentary(
        _with(6, "Conversion and paragraphing matter."), lang="en"
    )
    assert not has_meta_commentary("\n".join(BODY), lang="en")


def test_meta_middle_lines_not_checked():
    # 7 lines: head = 0, 1; tail = 4, 5, 6; lines 2 and 3 are not looked at.
    text = _with(2, "A revised version.")
    assert not has_meta_commentary(text, lang="en")
    lines = text.split("\n")
    lines[3] = "Another paragraph."
    assert not has_meta_commentary("\n".join(lines), lang="en")


def test_meta_counts_non_empty_lines():
    text = "Title\n\n\nRevised paragraph below\n\n" + "\n\n".join(BODY)
    assert has_meta_commentary(text, lang="en")
    text = "\n".join(BODY[:6]) + "\nFinal revision.\n\n\n  \n"
    assert has_meta_commentary(text, lang="en")
    text = "Title\n\nIntro\n\nThe revised plan\n\n" + "\n\n".join(BODY)
    assert not has_meta_commentary(text, lang="en")


ZH_BODY = [
    "春天来了。",
    "花开了。",
    "鸟儿在唱歌。",
    "孩子们在玩耍。",
    "天气很好。",
    "大家都很开心。",
    "太阳下山了。",
]


def _zh_with(index, sentence):
    lines = list(ZH_BODY)
    lines[index] = sentence
    return "\n".join(lines)


def test_meta_chinese_positive():
    assert has_meta_commentary(_zh_with(0, "以下是修改后的版本："), lang="zh")
    assert has_meta_commentary(_zh_with(0, "以下是修改后的版本："))
    assert has_meta_commentary(_zh_with(6, "希望这个回答对你有帮助。"), lang="zh")
    assert has_meta_commentary(_zh_with(1, "我对原文进行了润色和扩写。"), lang="zh")


def test_meta_chinese_negative():
    assert not has_meta_commentary("\n".join(ZH_BODY), lang="zh")
    assert not has_meta_commentary(_zh_with(2, "这是修改后的段落。"), lang="zh")
    assert not has_meta_commentary(_zh_with(3, "他没有回复。"), lang="zh")


def test_meta_uses_the_language_list():
    text = _zh_with(0, "以下是修改后的版本：")
    assert not has_meta_commentary(text, lang="en")
    assert has_meta_commentary(text, lang="zh")


# --------------------------------------------------------------------------- check_filters


def test_filters_constant():
    assert FILTERS == ("ending", "repetition", "meta")


def test_check_filters_pass():
    assert check_filters("\n".join(BODY)) == []
    assert check_filters("\n".join(ZH_BODY)) == []


def test_check_filters_each_failure():
    assert check_filters("\n".join(BODY) + "\nAnd then") == ["ending"]
    assert check_filters(f"alpha {P10} beta gamma {P10} delta.") == ["repetition"]
    assert check_filters(_with(0, "Here is the revised version:")) == ["meta"]


def test_check_filters_all_failures_in_order():
    text = f"Here is the revised version:\nalpha {P10} beta gamma {P10} delta"
    assert check_filters(text, lang="en") == ["ending", "repetition", "meta"]


def test_check_filters_chinese():
    span = THOUSAND[20:33]
    text = (
        "以下是润色后的文章：\n" + THOUSAND[:40] + "\n" + span + "，" + THOUSAND[60:70]
    )
    assert check_filters(text) == ["ending", "repetition", "meta"]


# --------------------------------------------------------------------------- sampling

LENGTHS10 = [50, 10, 90, 30, 70, 20, 100, 40, 80, 60]
# By ascending rank i: r = 1 - i/10, p = max(0, 1 - 2 r^3).
BY_RANK10 = [0.0, 0.0, 0.0, 0.314, 0.568, 0.75, 0.872, 0.946, 0.984, 0.998]


def test_keep_probabilities_n10_hand_computed():
    expected = [BY_RANK10[sorted(LENGTHS10).index(x)] for x in LENGTHS10]
    assert expected == [0.568, 0.0, 0.984, 0.0, 0.872, 0.0, 0.998, 0.314, 0.946, 0.75]
    assert keep_probabilities(LENGTHS10) == pytest.approx(expected)


def test_keep_probabilities_sorted_input():
    assert keep_probabilities(sorted(LENGTHS10)) == pytest.approx(BY_RANK10)
    assert keep_probabilities(sorted(LENGTHS10, reverse=True)) == pytest.approx(
        BY_RANK10[::-1]
    )


def test_keep_probabilities_ties_by_index():
    # Ranks 0, 1, 2 of 3: r = 1, 2/3, 1/3.
    assert keep_probabilities([5, 5, 5]) == pytest.approx([0.0, 11 / 27, 25 / 27])


def test_keep_probabilities_empty():
    assert keep_probabilities([]) == []
    assert length_biased_sample([], random.Random(0)) == []


def test_keep_probabilities_large_n_shares():
    probs = keep_probabilities(list(range(10000)))
    assert sum(probs) / len(probs) == pytest.approx(0.595, abs=0.01)
    dropped = sum(1 for p in probs if p == 0.0) / len(probs)
    assert dropped == pytest.approx(0.21, abs=0.01)


def test_length_biased_sample_fixed_draws():
    # A draw of 0.5 keeps exactly the items with p > 0.5.
    kept = length_biased_sample(LENGTHS10, FixedRng([0.5] * 10))
    assert kept == [0, 2, 4, 6, 8, 9]


def test_length_biased_sample_never_keeps_shortest():
    for seed in range(200):
        kept = length_biased_sample(LENGTHS10, random.Random(seed))
        assert not {1, 3, 5} & set(kept)
        assert kept == sorted(kept)


def test_length_biased_sample_seeded():
    rng = random.Random(7)
    lengths = [rng.randint(100, 5000) for _ in range(5000)]
    a = length_biased_sample(lengths, random.Random(42))
    b = length_biased_sample(lengths, random.Random(42))
    c = length_biased_sample(lengths, random.Random(43))
    assert a == b
    assert a != c
    assert len(a) / len(lengths) == pytest.approx(0.595, abs=0.02)
    cutoff = sorted(lengths)[int(0.2 * len(lengths))]
    assert all(lengths[i] >= cutoff for i in a)


# --------------------------------------------------------------------------- meta lines


def test_strip_meta_lines_removes_announcements_at_both_ends_only():
    from sltk.text import strip_meta_lines

    body = ("Tides rise twice a day.\n\nThe moon pulls the water across the bay, and each revision of charts "
            "follows it.\n\nSailors learn the rhythm early.")
    text = f"Here is the expanded version of the outline:\n\n{body}\n\nI hope this revised version helps."
    assert strip_meta_lines(text, "en") == body
    assert strip_meta_lines("Sure! Here's a longer text:\nTides rise.", "en") == "Tides rise."
    assert strip_meta_lines(body, "en") == body  # a meta word inside the body stays
    assert strip_meta_lines("The plan has three parts:\nFirst, tides.", "en") == "First, tides."
    long_first = "The response of coastal towns to rising seas " + "has been slow and costly " * 8 + "."
    assert strip_meta_lines(long_first + "\nMore.", "en").startswith("The response")
    zh = "以下是扩写后的版本：\n潮汐每天涨落两次。\n希望这个修改后的版本对你有帮助。"
    assert strip_meta_lines(zh, "zh") == "潮汐每天涨落两次。"


def test_strip_meta_lines_drops_closing_commentary_and_tag_lines():
    from sltk.text import has_meta_commentary, strip_meta_lines

    body = "Tides rise twice a day.\n\nSailors learn the rhythm early."
    closing = ("Overall, I hope that this expanded version of the story gives readers a better sense of the sea "
               "and of the people who live beside it, and I am excited to see where it goes next!")
    assert has_meta_commentary(f"{body}\n\n{closing}", "en")  # the filter would reject the whole text
    assert strip_meta_lines(f"{body}\n\n{closing}", "en") == body
    assert strip_meta_lines(f"{body}\n\n#tides #sea @harbour https://example.org/x", "en") == body
    too_long = "This version " + "of the tale goes on and on " * 14 + "."
    assert strip_meta_lines(f"{body}\n\n{too_long}", "en").endswith(too_long)  # over 80 words: kept


def test_a_letter_signature_after_a_valediction_ends_properly():
    from sltk.text import ends_properly

    letter = "Dear Sam,\n\nThank you for the visit. We loved it.\n\nWarm regards,\nSarah Thompson"
    assert ends_properly(letter, "en")
    assert ends_properly("Thanks again for everything.\n\nBest,\n\nMali\n", "en")
    assert not ends_properly("Thank you for the visit, and\n\nWarm regards,\nSarah", "en")  # cut before it
    assert not ends_properly("We walked to the harbour and\nthen,\nthe", "en")  # not a signature: no sentence ends
    assert not ends_properly("Our plan:\n\nItems to bring,\nthe tent poles and", "en")


# --------------------------------------------------------------------------- clean_prefix


def test_clean_prefix_stops_before_the_paragraph_that_repeats_and_drops_an_unfinished_end():
    paras = [f"Part {i}: the {w} river runs past the {w} mill toward a {w} sea." for i, w in
             enumerate(["grey", "green", "gold", "blue"])]
    loop = "We walked along the shore and we walked along the shore and we walked along the shore."
    assert clean_prefix("\n\n".join(paras + [loop, "Then the last"])) == "\n\n".join(paras)
    assert clean_prefix("\n\n".join(paras + ["Then the last"])) == "\n\n".join(paras)
    assert clean_prefix("\n\n".join(paras + ["Then the last"]), ending=False) == "\n\n".join(paras + ["Then the last"])
    clean = "\n\n".join(paras)
    assert clean_prefix(clean) == clean and check_filters(clean_prefix(clean), "en") == []
    assert clean_prefix(loop) == "" and clean_prefix("no closing mark") == ""


def test_clean_prefix_repeats_across_paragraphs_and_in_chinese():
    a = "One two three four five six seven eight nine ten eleven."
    b = "Twelve then: one two three four five six seven eight nine ten again."
    assert clean_prefix(f"{a}\n\nFresh words here.\n\n{b}", "en") == f"{a}\n\nFresh words here."
    spring = "春天来了，花园里开满了红色的花。"
    zh = [spring, "孩子们在河边放风筝，笑声传得很远。", spring, "晚上"]
    assert clean_prefix("\n\n".join(zh), "zh") == "\n\n".join(zh[:2])
