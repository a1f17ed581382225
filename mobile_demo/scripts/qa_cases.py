"""The question/passage pairs the mobile demo's Java and JavaScript cores are tested on.

Each case: (name, question, context, top_k, handle_impossible_answer). They cover passages longer than
one 384-token window (the doc stride), accents and other Unicode (decomposed accents, CJK, Greek,
Cyrillic, Devanagari, emoji outside the BMP), punctuation, words not in the vocabulary, control and
zero-width characters, an over-long question (cut at 64 tokens) and the null answer.
"""

_SHORT = "The Eiffel Tower is 330 metres tall and stands in Paris, France."
_HISTORY = (
    "The city was founded in 1284 by merchants who traded wool and salt along the river. "
    "Its first bridge, built of oak, burned in 1310; the stone bridge that replaced it still stands. "
    "In the sixteenth century the town hall was enlarged, a university was opened, and printers "
    "arrived from Mainz and Venice. ")
_SCIENCE = (
    "Photosynthesis converts light energy into chemical energy. Chlorophyll absorbs mostly blue and red "
    "light, which is why leaves look green. The reactions take place in chloroplasts, and oxygen is "
    "released as a by-product when water molecules are split. ")
_LONG = (_HISTORY * 6 + "The observatory on the hill was completed in 1891 by the astronomer Ida Brandt. "
         + _SCIENCE * 5 + "The harbour master in 1902 was a man named Olav Strand. " + _HISTORY * 4)
_VERY_LONG = _LONG + _SCIENCE * 8 + "The last tram ran on 31 December 1968. " + _HISTORY * 3

CASES = [
    ("short", "How tall is the Eiffel Tower?", _SHORT, 1, False),
    ("short_top3", "Where does the tower stand?", _SHORT, 3, False),
    ("short_null", "Who painted the tower?", _SHORT, 2, True),
    ("one_word_context_null", "What is it?", "Paris", 3, True),
    ("two_word_context_null", "What?", "Hello world", 5, True),
    ("short_null_top10", "Who built it?", "Built by Gustave Eiffel.", 10, True),
    ("long_stride", "Who completed the observatory?", _LONG, 1, False),
    ("long_stride_top5", "Who was the harbour master in 1902?", _LONG, 5, False),
    ("long_stride_null", "When did the last tram run?", _LONG, 3, True),
    ("very_long_stride", "When did the last tram run?", _VERY_LONG, 3, False),
    ("very_long_null", "What absorbs blue light?", _VERY_LONG, 2, True),
    ("accents_precomposed", "Where is the café?",
     "Le café « Chez Zoë » est à Montréal, près de la façade naïve de l'hôtel São Paulo.", 3, False),
    ("accents_decomposed", "Where is the cafe?",
     "Le cafe\u0301 est a\u0300 Montre\u0301al, pre\u0300s de Zu\u0308rich.", 2, False),
    ("german", "Was kostet das Brötchen?",
     "In Zürich kostet ein Brötchen 1,20 Franken; in Köln zahlt man für Straßenbahn-Tickets mehr.", 3, False),
    ("greek_cyrillic", "Who is Sisyphus?",
     "Ο Σίσυφος ήταν βασιλιάς. Москва — столица России. ΣΊΣΥΦΟΣ in capitals.", 3, False),
    ("cjk", "What is the capital?", "東京は日本の首都です。北京是中国的首都。Seoul is 서울.", 3, False),
    ("devanagari", "What is the language?", "हिन्दी भारत की एक भाषा है। Hindi is written in Devanagari.", 2, False),
    ("emoji", "What does the emoji mean?",
     "I 🙂 love 🍕 pizza from Napoli 🇮🇹, and my score was 💯 out of 💯.", 3, False),
    ("astral_math", "Which letter?", "The symbol 𝔘 is a fraktur U; 𝒜 is script A and 😀 is a face.", 2, False),
    ("punctuation", "How much was it?",
     ("It cost $3.50 (plus 7% tax) — i.e., about €3.20… \"Cheap!\", said the U.S.A.-born e-mail writer; "
      "[see p. 12] {ok} <tag> a/b c\\d #hash @at ~tilde ^caret `tick` _under_ |pipe|."), 3, False),
    ("quotes", "Who said it?", "„Ja“, sagte sie. «Oui», dit-il. “Yes,” she said. 'Fine' — he replied.", 2, False),
    ("unknown_words", "What is a qwxzptlk?",
     "A qwxzptlk is a zzzxxyqq found near the frobnicated vvvvwwww of Xqzkjh.", 3, False),
    ("long_word", "What is the long word?",
     "The word " + "a" * 120 + " is longer than one hundred characters, and " + "b" * 99 + " is not.",
     2, False),
    ("unknown_symbols", "What is shown?", "Symbols ⌘ ☃ ♞ ⚙ and ✈ appear in the ⟦bracketed⟧ text.", 2, False),
    ("whitespace", "Where is it?",
     "  Tabs\tand\nnew\r\nlines  and\u00a0non-breaking\u2009thin\u3000ideographic spaces.  ", 2, False),
    ("zero_width", "What is hidden?",
     "Zero\u200bwidth spaces\ufeff and soft\u00adhyphens and control\u0007chars are removed.", 2, False),
    ("numbers", "When was it founded?", _HISTORY, 2, False),
    ("mixed_case", "WHAT IS RELEASED?", _SCIENCE.upper(), 3, False),
    ("repeated_answer", "What color?", "Red. Red? RED! red, and blue. Red.", 20, False),
    ("long_question", "Why " + "really " * 70 + "is the sky blue?",
     "The sky is blue because air scatters blue light more than red light.", 2, False),
    ("question_cut_mid_word", "What " + "is " * 61 + "unaffable antidisestablishmentarianism?",
     "Unaffable means unfriendly.", 1, False),
    ("accented_question", "Où est né Molière ?", "Molière est né à Paris en 1622.", 2, True),
    ("apostrophes", "Whose book?", "It's John's book, isn't it? The students' books aren't theirs.", 3, False),
    ("science_null", "What is split?", _SCIENCE, 4, True),
    ("numbers_units", "How far?", "It is 42.195 km (26.2 mi) or 4.2e4 m; 1,000,000 steps at 3:15 p.m.", 3, False),
    ("newline_paragraphs", "Who was the harbour master?",
     "Paragraph one.\n\nThe harbour master was Olav Strand.\n\n\tParagraph three.", 1, True),
]

# Random weights never make [CLS] win, so for these cases the fixture script raises the [CLS] start and end
# logits by CLS_BOOST before the pipeline post-processes them (and stores the raised logits): the null
# answer then comes out on top, and decoding is tested on it.
CLS_BOOSTED = {"short_null", "accented_question"}
CLS_BOOST = 6.0

