"""Knowledge-augmented zero-shot prompts (ELEVATER / K-LITE): class definitions from WordNet.

ELEVATER's toolkit can append external knowledge about a class (a WordNet or Wiktionary
definition, GPT-3 descriptions) to every templated prompt of that class. This module does the
WordNet-definition variant (``--knowledge wordnet``) with a locally installed WordNet corpus,
read through nltk; nothing is downloaded.

The prompt format is ELEVATER's, from ``extract_text_features`` in
``vision_benchmark/evaluation/feature.py`` of Computer-Vision-in-the-Wild/Elevater_Toolkit_IC::

    knowledge_text = f' ; {classname} , ' + knowledge_text
    knowledge_text = ' ' + ' '.join(word_tokenize(knowledge_text))
    texts = [template.format(classname) + knowledge_text for ... for template in templates]

so ``"a photo of a {}."`` for ``dog`` becomes
``"a photo of a dog. ; dog , a member of the genus Canis ..."``. The definition is ELEVATER's
``concept_definition`` (same file): the definition of the first synset that
``wordnet.synsets(classname)`` returns (nouns first, then verbs, adjectives, adverbs, each in
WordNet's sense order; nltk's morphy maps plurals and inflections to their lemma).

Two deliberate differences, both documented where they happen:

* WordNet spells multi-word lemmas with underscores (``golden_retriever``) and nltk does not
  translate spaces, so ELEVATER's live lookup finds nothing for ``golden retriever``. A name
  that finds no synset as written is looked up again with spaces as underscores.
* ``word_tokenize`` runs with ``preserve_line=True``: it skips Punkt sentence splitting, which
  would need a second nltk data package (punkt_tab). The tokens only differ when a definition
  holds a sentence-ending period followed by more text, which WordNet glosses (examples are
  stripped) almost never do; the Treebank word tokenizer itself is the same.

Classes with no synset keep their plain templated prompts, as ELEVATER does for classes with
no knowledge; :class:`KnowledgePrompts` lists them so a run can report coverage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from itra_bench.errors import UserError
from itra_bench.protocols.zeroshot import fill_template

#: Values of ``--knowledge``: ``none`` keeps the card's plain templates.
KNOWLEDGE_SOURCES = ("none", "wordnet")

#: How to get what ``--knowledge wordnet`` needs; part of every "not installed" message.
INSTALL_HINT = (
    "Install it with `pip install nltk && python -m nltk.downloader wordnet`; on a machine "
    "with no network, copy an nltk_data folder holding corpora/wordnet/ (or "
    "corpora/wordnet.zip) from a machine that has it and set NLTK_DATA to that folder."
)


def require_wordnet() -> Any:
    """The locally installed WordNet, as an nltk ``WordNetCorpusReader``.

    Raises :class:`UserError` naming what is missing (nltk itself, or the corpus and the
    folders nltk looked in) and how to install it. The reader is built here rather than taken
    from ``nltk.corpus.wordnet`` because that lazy global keeps whichever corpus it loaded
    first, while ``nltk.data.path`` / ``NLTK_DATA`` may change between calls (and in tests).
    """
    try:
        import nltk.data
    except ImportError:
        raise UserError(
            "--knowledge wordnet needs the nltk package and its WordNet corpus, and nltk is "
            "not installed. " + INSTALL_HINT
        ) from None
    try:
        root = nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            # What nltk's own loader falls back to: the corpus zip as nltk.downloader leaves it.
            root = nltk.data.find("corpora/wordnet.zip/wordnet/")
        except LookupError:
            looked = ", ".join(str(p) for p in nltk.data.path) or "(nltk.data.path is empty)"
            raise UserError(
                "--knowledge wordnet needs the WordNet corpus for nltk, and it is not "
                f"installed: no corpora/wordnet or corpora/wordnet.zip under {looked}. "
                + INSTALL_HINT
            ) from None
    return _load_reader(root)


# Open readers by corpus location: reading WordNet's indices takes seconds, once is enough.
_READERS: dict[str, Any] = {}


def _load_reader(root: Any) -> Any:
    """The reader of the corpus at ``root`` (an nltk path pointer), opened once per process."""
    from nltk.corpus.reader import CorpusReader, WordNetCorpusReader
    from nltk.corpus.reader.wordnet import WordNetError
    from nltk.corpus.util import LazyCorpusLoader

    key = str(root)
    if key in _READERS:
        return _READERS[key]
    # The same multilingual companion nltk.corpus.wordnet gets: only opened by lookups in
    # other languages, which we never make, but passing None makes nltk warn on every load.
    omw = LazyCorpusLoader("omw-2.0", CorpusReader, r".*/wn-data-.*\.tab", encoding="utf8")
    try:
        reader = WordNetCorpusReader(root, omw)
    except (OSError, ValueError, AssertionError, LookupError, WordNetError) as exc:
        raise UserError(
            f"the WordNet corpus at {key} could not be read ({type(exc).__name__}: {exc}); "
            "reinstall it. " + INSTALL_HINT
        ) from None
    _READERS[key] = reader
    return reader


def wordnet_definition(classname: str, wordnet: Any) -> str | None:
    """The definition of ``classname``'s first WordNet synset, or None when it has none.

    As ELEVATER's ``concept_definition``: ``wordnet.synsets(name)[0].definition()``, all parts
    of speech. A multi-word name that finds nothing is retried with WordNet's underscores.
    """
    for form in dict.fromkeys([classname.strip(), classname.strip().replace(" ", "_")]):
        if not form:
            continue
        synsets = wordnet.synsets(form)
        if synsets:
            definition = synsets[0].definition().strip()
            return definition or None
    return None


def wordnet_definitions(
    classnames: Sequence[str], wordnet: Any | None = None
) -> dict[str, str | None]:
    """Each class name's WordNet definition (None for names WordNet does not know).

    ``wordnet`` defaults to :func:`require_wordnet` (which raises a :class:`UserError` with
    install instructions when nltk or the corpus is missing).
    """
    if wordnet is None:
        wordnet = require_wordnet()
    return {name: wordnet_definition(name, wordnet) for name in classnames}


def knowledge_suffix(classname: str, knowledge: str) -> str:
    """ELEVATER's text appended to each prompt: ``' ; {classname} , {knowledge}'``, tokenized.

    Tokenizing with nltk's Treebank tokenizer splits punctuation off words, as ELEVATER's
    prompts have it (``"silky, golden"`` -> ``"silky , golden"``).
    """
    from nltk.tokenize import word_tokenize

    # preserve_line=True: no Punkt sentence splitting (needs punkt_tab); see module docstring.
    tokens = word_tokenize(f" ; {classname} , {knowledge}", preserve_line=True)
    return " " + " ".join(tokens)


def augment_templates(
    classnames: Sequence[str],
    templates: Sequence[str],
    definitions: Mapping[str, str | None],
) -> dict[str, list[str]]:
    """Per-class finished prompts: each template filled with the class name, plus its definition.

    The result is what :func:`itra_bench.protocols.zeroshot.build_zeroshot_classifier` takes as
    class-specific prompts. A class whose definition is None or empty (or absent from
    ``definitions``) gets its plain templated prompts.
    """
    if isinstance(templates, str):
        raise ValueError("templates must be a list of template strings, not one string")
    prompts: dict[str, list[str]] = {}
    for name in classnames:
        plain = [fill_template(t, name) for t in templates]
        definition = definitions.get(name)
        if definition:
            suffix = knowledge_suffix(name, definition)
            prompts[name] = [p + suffix for p in plain]
        else:
            prompts[name] = plain
    return prompts


@dataclass
class KnowledgePrompts:
    """Knowledge-augmented prompts of one dataset, and which classes found no knowledge."""

    source: str
    prompts: dict[str, list[str]]
    definitions: dict[str, str | None] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        """Classes that kept the plain templates (no synset), in class order."""
        return [name for name, d in self.definitions.items() if not d]

    @property
    def coverage(self) -> tuple[int, int]:
        """(classes with knowledge, all classes): ELEVATER logs the same as 'coverage is a / b'."""
        return len(self.definitions) - len(self.missing), len(self.definitions)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record for a result's details."""
        if self.source == "none":
            return {"knowledge": "none"}
        found, total = self.coverage
        return {"knowledge": self.source, "knowledge_coverage": [found, total],
                "knowledge_missing": self.missing}


def knowledge_prompts(
    classnames: Sequence[str], templates: Sequence[str], source: str = "wordnet",
    wordnet: Any | None = None,
) -> KnowledgePrompts:
    """Prompts for every class under knowledge ``source`` (one of :data:`KNOWLEDGE_SOURCES`).

    ``none`` gives the plain templated prompts; ``wordnet`` appends WordNet definitions
    (:func:`require_wordnet` is called when ``wordnet`` is not given).
    """
    if source == "none":
        definitions: dict[str, str | None] = dict.fromkeys(classnames)
    elif source == "wordnet":
        definitions = wordnet_definitions(classnames, wordnet)
    else:
        raise UserError(
            f"--knowledge {source}: unknown knowledge source; choose one of "
            + ", ".join(KNOWLEDGE_SOURCES)
        )
    return KnowledgePrompts(source, augment_templates(classnames, templates, definitions),
                            definitions)
