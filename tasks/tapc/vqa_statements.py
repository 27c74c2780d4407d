"""Rewrite a VQA question into a statement with an answer slot (TAP-C's "question to
masked template" step, done with fixed rules instead of T5).

TAP-C (Song et al., 2022, "CLIP Models are Few-shot Learners: Empirical Studies on VQA and
Visual Entailment") turns a question into a statement with a [MASK], fills the mask with each
candidate answer and lets CLIP score the image against the filled statements. These rules are
deterministic and documented here, so results do not depend on a generator model.

The question is lower-cased, its whitespace collapsed and its trailing ``?`` / ``.`` dropped,
then the first rule that matches decides (``{}`` is the answer slot):

====================  ==============================================  =========================
rule                  question                                        statement
====================  ==============================================  =========================
``polar``             is the man smiling                              yes: the man is smiling.
                                                                      no: the man is not
                                                                      smiling.
``polar-there``       are there any dogs                              there are any dogs. /
                                                                      there are not any dogs.
``how-many-there``    how many dogs are there (in the park)           there are {} dogs (in
                                                                      the park).
``how-many``          how many people are (in the photo)              there are {} people (in
                                                                      the photo).
``color``             what color is the car / what color are the ...  the color of the car is
                                                                      {}.
``color-noun``        what color shirt is the man wearing             the man is wearing a {}
                                                                      shirt.
``kind-of``           what kind/type/sort of dog is this              a photo of a {} dog.
``what-noun``         what sport is being played / what animal ...    the sport is {}.
``what-is-doing``     what is the man holding / what is the cat on    the man is holding {}. /
                                                                      the cat is on {}.
``what-is``           what is on the table / what is this             {} is on the table. /
                                                                      this is {}.
``where``             where is the cat                                the cat is in {}.
``who``               who is holding the umbrella                     {} is holding the
                                                                      umbrella.
``generic``           anything else (why ..., which ..., ...)         question: <q>? answer:
                                                                      {}.
====================  ==============================================  =========================

Polar questions start with an auxiliary (is, are, does, can, ...) and have no `` or ``
(choice questions such as "is it day or night" are ``generic``). The auxiliary moves after
the subject, and ``not`` follows it for the "no" statement; ``do``/``does``/``did`` are
dropped in the "yes" statement. The subject is a pronoun or demonstrative (this, he, ...)
alone, else a determiner (the, a, his, ...) plus the next word and any ``of <noun phrase>``
(so "is the color of the car red" -> "the color of the car is red."), else the first word.
Filling a polar statement with an answer other than yes/no falls back to the generic form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AUXILIARIES = ("is", "are", "was", "were", "does", "do", "did", "can", "could", "will",
               "would", "should", "has", "have", "had", "may", "might", "must", "shall")
DO_SUPPORT = ("does", "do", "did")
PRONOUNS = ("it", "he", "she", "they", "we", "you", "i", "there", "someone", "anyone",
            "everyone", "anybody", "somebody", "everything", "something", "anything")
DEMONSTRATIVES = ("this", "that", "these", "those")
DETERMINERS = ("the", "a", "an", "his", "her", "its", "their", "my", "your", "our", "any",
               "some", "all", "both", "each", "every", *DEMONSTRATIVES)
PREPOSITIONS = ("on", "in", "under", "behind", "above", "inside", "outside", "next", "near",
                "at", "below", "beside", "between", "over", "to", "for", "with", "from", "by")
_WHAT_NOUN_STOP = ("is", "are", "was", "were", "does", "do", "did", "can", "could", "kind",
                   "type", "sort", "color", "colour", "of", "the", "a", "an", "this", "that")


@dataclass(frozen=True)
class Statement:
    """A question rewritten as a statement.

    ``template`` has one ``{}`` slot for the answer. Polar statements also carry the
    ``affirmative`` and ``negative`` sentences used for the answers ``yes`` and ``no``.
    """

    question: str
    rule: str
    template: str
    affirmative: str = ""
    negative: str = ""

    def fill(self, answer: str) -> str:
        """The statement with ``answer`` in its slot (the yes / no sentence for polar ones)."""
        if self.rule.startswith("polar") and answer in ("yes", "no"):
            return self.affirmative if answer == "yes" else self.negative
        return self.template.format(answer)


def clean_question(question: str) -> str:
    """Lower-cased, single-spaced, without the trailing question mark or period."""
    q = " ".join(question.lower().split())
    return q.rstrip("?.! ").strip()


def split_subject(words: list[str]) -> tuple[list[str], list[str]]:
    """Split the words after a moved auxiliary into (subject, rest); see the module docstring.

    A demonstrative is the whole subject ("is this a cat") unless a noun seems to follow it
    and something after that ("is this dog happy").
    """
    if not words:
        return [], []
    first = words[0]
    if first in PRONOUNS:
        return words[:1], words[1:]
    if first in DEMONSTRATIVES and (len(words) < 3 or words[1] in ("not", "a", "an", "the")
                                    or words[1] in PREPOSITIONS
                                    or words[1].endswith(("ing", "ed"))):
        return words[:1], words[1:]
    if first in DETERMINERS and len(words) >= 2:
        end = 2
        # A possessive is still a determiner: "the man's hat".
        if words[1].endswith("'s") and len(words) >= 3:
            end = 3
        # "the color of the car": absorb "of <determiner>? <word>" chains.
        while end + 1 < len(words) and words[end] == "of":
            end += 3 if words[end + 1] in DETERMINERS and end + 2 < len(words) else 2
        return words[:end], words[end:]
    return words[:1], words[1:]


def _sentence(words: list[str]) -> str:
    return " ".join(w for w in words if w) + "."


def _polar(q: str, words: list[str]) -> Statement:
    aux, rest = words[0], words[1:]
    subject, predicate = split_subject(rest)
    rule = "polar-there" if subject == ["there"] else "polar"
    if aux in DO_SUPPORT:
        affirmative = _sentence([*subject, *predicate])
    else:
        affirmative = _sentence([*subject, aux, *predicate])
    negative = _sentence([*subject, aux, "not", *predicate])
    return Statement(q, rule, _generic_template(q), affirmative, negative)


def _generic_template(q: str) -> str:
    return "question: " + q.replace("{", "(").replace("}", ")") + "? answer: {}."


def _slot(text: str) -> str:
    """Escape braces of question text so ``str.format`` only sees the answer slot."""
    return text.replace("{", "(").replace("}", ")")


def statement_for(question: str) -> Statement:
    """The slotted statement of a question, by the first matching rule."""
    q = clean_question(question)
    words = q.split()
    s = _slot
    if not words:
        return Statement(q, "generic", _generic_template(q))
    if words[0] in AUXILIARIES and " or " not in f" {q} " and len(words) > 1:
        return _polar(q, words)
    if m := re.fullmatch(r"how many (.+?) (?:are|is|were|was) there(?: (.*))?", q):
        tail = f" {m[2]}" if m[2] else ""
        return Statement(q, "how-many-there", f"there are {{}} {s(m[1])}{s(tail)}.")
    if m := re.fullmatch(r"how many (.+?) (?:are|is|were|was) (.+)", q):
        return Statement(q, "how-many", f"there are {{}} {s(m[1])} {s(m[2])}.")
    if m := re.fullmatch(r"how many (.+?)(?: (?:do|does|did|can|could) .+)?", q):
        return Statement(q, "how-many", f"there are {{}} {s(m[1])}.")
    if m := re.fullmatch(r"what colou?r (?:is|are|was|were) (.+)", q):
        return Statement(q, "color", f"the color of {s(m[1])} is {{}}.")
    if m := re.fullmatch(r"what colou?r (\w+) (?:is|are|was|were) (.+)", q):
        subject, rest = split_subject(m[2].split())
        if rest:
            return Statement(q, "color-noun",
                             f"{s(' '.join(subject))} is {s(' '.join(rest))} a {{}} {s(m[1])}.")
        return Statement(q, "color-noun", f"the color of the {s(m[1])} is {{}}.")
    if m := re.fullmatch(r"what colou?r (?:of )?(?:the )?(\w+(?: \w+)?)", q):
        return Statement(q, "color", f"the color of the {s(m[1])} is {{}}.")
    if m := re.fullmatch(r"what (?:kind|type|sort)s? of (\w+(?: \w+)?)(?: (?:is|are|was|were|"
                         r"does|do|can) .*)?", q):
        return Statement(q, "kind-of", f"a photo of a {{}} {s(m[1])}.")
    if (m := re.fullmatch(r"what (\w+) (?:is|are|was|were|does|do|can) .+", q)) \
            and m[1] not in _WHAT_NOUN_STOP:
        return Statement(q, "what-noun", f"the {s(m[1])} is {{}}.")
    if m := re.fullmatch(r"what (is|are|was|were) (.+)", q):
        aux, rest = m[1], m[2].split()
        if rest[0] in PREPOSITIONS:
            return Statement(q, "what-is", f"{{}} {aux} {s(' '.join(rest))}.")
        subject, predicate = split_subject(rest)
        if predicate:
            return Statement(q, "what-is-doing",
                             f"{s(' '.join(subject))} {aux} {s(' '.join(predicate))} {{}}.")
        return Statement(q, "what-is", f"{s(' '.join(subject))} {aux} {{}}.")
    if m := re.fullmatch(r"where (?:is|are|was|were) (.+)", q):
        subject, rest = split_subject(m[1].split())
        aux = "are" if q.startswith(("where are", "where were")) else "is"
        return Statement(q, "where", f"{s(' '.join([*subject, aux, *rest]))} in {{}}.")
    if m := re.fullmatch(r"who (is|are|was|were) (.+)", q):
        return Statement(q, "who", f"{{}} {m[1]} {s(m[2])}.")
    return Statement(q, "generic", _generic_template(q))
