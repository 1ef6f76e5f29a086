"""Word lists the transcript features use (English), and the token normaliser they share.

The lists are small and generic on purpose: they describe how people talk in any talk, never the
topic of one, so they carry over to talks we have not seen. Ambiguous fillers ("like", "you know")
are only counted where the punctuation around them marks them as fillers (see ``score``).
"""

from __future__ import annotations

import re


def _set(text: str) -> frozenset[str]:
    """A word set from a whitespace-separated literal (keeps long lists readable)."""
    return frozenset(text.split())


_EDGE = re.compile(r"^[^\w']+|[^\w']+$")

TERMINAL = (".", "?", "!", "…")
CLOSERS = "\"'”’)]»"

# Abbreviations whose final period does not end a sentence.
ABBREVIATIONS = _set(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e u.s u.k a.m p.m no approx dept fig inc ltd co"
)

STOPWORDS = _set("""
    a about above after again against all am an and any are aren't as at be because been before being
    below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down
    during each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here
    here's hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself
    let's me more most mustn't my myself no nor not of off on once only or other ought our ours ourselves
    out over own same shan't she she'd she'll she's should shouldn't so some such than that that's the their
    theirs them themselves then there there's these they they'd they'll they're they've this those through
    to too under until up very was wasn't we we'd we'll we're we've were weren't what what's when when's
    where where's which while who who's whom why why's with won't would wouldn't you you'd you'll you're
    you've your yours yourself yourselves
    also just really actually basically literally gonna wanna gotta yeah yes okay ok oh well right
    thing things stuff lot lots kind sort way going get got getting go goes went make made say said
    says know think thought mean want see look come came take one two like um uh er erm ah hmm mm
    """)

# Single-token fillers: disfluencies whatever the punctuation.
FILLERS = _set("um umm uh uhh er erm ah hmm mm mhm")
# Counted as fillers only when set off by a comma (", like," / "you know,").
SOFT_FILLERS = frozenset(["like", "basically", "literally", "actually"])

DANGLING_CONJUNCTIONS = {
    "and": 1.0, "but": 1.0, "or": 1.0, "because": 1.0, "which": 1.0, "plus": 1.0, "also": 1.0,
    "nor": 1.0, "yet": 1.0, "then": 0.7, "so": 0.5, "anyway": 0.5,
}  # fmt: skip
# "So," opens many good clips ("So why does this matter?"), hence half weight.

# Words no finished sentence ends on, whatever punctuation an engine put after them: a thought
# cut off ("… but…", "… and the.") rather than completed. Conjunctions that always join two
# parts, and articles, which always precede their noun.
TRAILING_OFF = _set("and but or because which nor plus yet although though whereas the a an")

# Pronouns that point back to something before the clip when they open it.
ANAPHORIC_ALWAYS = _set("it it's he he's she she's they they're them his her their its him")
# Demonstratives are anaphoric only as pronouns ("That is why…"), not as determiners ("This talk").
DEMONSTRATIVES = _set("this that these those")
FOLLOWING_VERBS = _set(
    """is was are were 's means meant made makes did does do has had have will would can could
    should might must shows showed gives gave led leads happened happens"""
)

DIRECT_ADDRESS = _set("you you're you've you'll you'd your yours yourself imagine picture")

NUMBER_WORDS = _set(
    """zero two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty
    hundred hundreds thousand thousands million millions billion billions trillion percent half
    twice double triple tenfold"""
)

# Strong-claim and contrast cues: words speakers use to flag what matters or what is surprising.
STRONG_CLAIMS = _set(
    """never always everyone nobody nothing everything biggest best worst
    secret truth wrong mistake mistakes myth surprising surprisingly shocking incredible crazy
    insane huge massive impossible critical crucial essential important problem problems
    fail failed failure lesson lessons rule rules stop must actually truly"""
)

QUESTION_OPENERS = _set("what why how when where who which whose whom")


def norm(text: str) -> str:
    """Lowercase token with surrounding punctuation removed and typographic apostrophes unified."""
    return _EDGE.sub("", text.strip().lower().replace("’", "'"))


def ends_sentence(text: str) -> bool:
    """Whether a word closes a sentence (terminal punctuation, not an abbreviation)."""
    t = text.strip().rstrip(CLOSERS)
    if not t.endswith(TERMINAL):
        return False
    if t.endswith(".") and not t.endswith("..."):
        return t[:-1].lower().lstrip("(\"'") not in ABBREVIATIONS
    return True


def is_question(text: str) -> bool:
    return text.strip().rstrip(CLOSERS).endswith("?")


def is_number(token: str) -> bool:
    return any(ch.isdigit() for ch in token) or token in NUMBER_WORDS


def is_content(token: str) -> bool:
    """A word that carries topic: not a stopword, at least 3 letters or a number."""
    if token in STOPWORDS:
        return False
    return (len(token) >= 3 and any(ch.isalpha() for ch in token)) or any(ch.isdigit() for ch in token)
