"""ELEVATER's knowledge-augmented prompts (``--knowledge wordnet``) from a local WordNet.

The real WordNet corpus cannot be downloaded here, so each test writes a tiny WordNet database
in WordNet's own on-disk format (the files nltk's ``WordNetCorpusReader`` opens: lexnames,
index.*, data.* with byte offsets, *.exc, index.sense) and points nltk at it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nltk = pytest.importorskip("nltk")

from itra_bench.errors import UserError  # noqa: E402
from itra_bench.protocols.zeroshot import build_zeroshot_classifier  # noqa: E402
from itra_bench.vision_benchmark import knowledge  # noqa: E402

# (pos, lexname index, lemmas, gloss): glosses as WordNet writes them, examples in quotes.
SYNSETS = [
    ("n", 1, ["dog", "domestic_dog"],
     'a member of the genus Canis; "the dog barked all night"'),
    ("n", 1, ["golden_retriever"], "an English breed having a long silky golden coat"),
    ("v", 2, ["dog", "chase"], 'go after with the intent to catch; "The policeman chased"'),
    ("a", 0, ["red"], "having the color of blood; (of hair) reddish"),
]
LEXNAMES = ["adj.all\t3", "noun.animal\t1", "verb.motion\t2"]
FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}


def write_wordnet(nltk_data: Path) -> Path:
    """Write SYNSETS as a WordNet 3.0-format database under ``nltk_data/corpora/wordnet``."""
    root = nltk_data / "corpora" / "wordnet"
    root.mkdir(parents=True)
    (root / "lexnames").write_text(
        "".join(f"{i:02d}\t{line}\n" for i, line in enumerate(LEXNAMES)))
    index: dict[str, dict[str, list[int]]] = {pos: {} for pos in FILES}
    data: dict[str, bytes] = dict.fromkeys(FILES, b"")
    senses = []
    for pos, lexfile, lemmas, gloss in SYNSETS:
        # A synset's id is the byte offset of its line in data.<pos>, 8 digits.
        offset = len(data[pos])
        words = " ".join(f"{lemma} 0" for lemma in lemmas)
        frames = " 00" if pos == "v" else ""  # verbs carry a (here empty) frame list
        head = f"{offset:08d} {lexfile:02d} {pos} {len(lemmas):02x} {words} 000{frames}"
        data[pos] += f"{head} | {gloss}  \n".encode()
        for lemma in lemmas:
            index[pos].setdefault(lemma.lower(), []).append(offset)
            senses.append(f"{lemma.lower()}%{'nvar'.index(pos) + 1}:{lexfile:02d}:00:: "
                          f"{offset:08d} 1 0\n")
    for pos, name in FILES.items():
        (root / f"data.{name}").write_bytes(data[pos])
        (root / f"index.{name}").write_text("".join(
            f"{lemma} {pos} {len(offs)} 0 {len(offs)} 0 {' '.join(f'{o:08d}' for o in offs)}  \n"
            for lemma, offs in sorted(index[pos].items())))
        (root / f"{name}.exc").write_text("")
    (root / "noun.exc").write_text("mice mouse\n")
    (root / "index.sense").write_text("".join(sorted(senses)))
    return root


@pytest.fixture
def nltk_data(tmp_path, monkeypatch):
    """An nltk data folder holding the tiny WordNet, and the only folder nltk searches."""
    folder = tmp_path / "nltk_data"
    write_wordnet(folder)
    monkeypatch.setattr(nltk.data, "path", [str(folder)])
    monkeypatch.setattr(knowledge, "_READERS", {})
    yield folder
    close_readers()


def close_readers() -> None:
    """Close the data files nltk's readers keep open, before tmp_path goes away."""
    for reader in knowledge._READERS.values():
        for handle in reader._data_file_map.values():
            handle.close()


def test_definitions_first_synset_as_elevater(nltk_data):
    wn = knowledge.require_wordnet()
    assert knowledge.require_wordnet() is wn  # opened once per corpus
    defs = knowledge.wordnet_definitions(
        ["dog", "Dogs", "golden retriever", "red", "xyzzy"], wn)
    assert defs == {
        # Nouns before verbs, the example in quotes stripped: nltk's synsets(c)[0].definition().
        "dog": "a member of the genus Canis",
        "Dogs": "a member of the genus Canis",  # lower-cased and lemmatised by nltk's morphy
        # WordNet spells it golden_retriever; found through the underscore retry.
        "golden retriever": "an English breed having a long silky golden coat",
        "red": "having the color of blood; (of hair) reddish",
        "xyzzy": None,
    }
    # The lookup is nltk's own, unchanged.
    assert wn.synsets("dog")[0].definition() == defs["dog"]
    assert wn.synsets("golden retriever") == []


def test_zipped_corpus_as_nltk_downloader_leaves_it(tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "nltk_data"
    root = write_wordnet(folder)
    shutil.make_archive(str(root), "zip", root_dir=root.parent, base_dir="wordnet")
    shutil.rmtree(root)
    monkeypatch.setattr(nltk.data, "path", [str(folder)])
    monkeypatch.setattr(knowledge, "_READERS", {})
    try:
        defs = knowledge.wordnet_definitions(["golden retriever"])
    finally:
        close_readers()
    assert defs == {"golden retriever": "an English breed having a long silky golden coat"}


def test_augmented_prompts_follow_elevater_format(nltk_data):
    templates = ["a photo of a {}.", "a sketch of the {c}."]
    result = knowledge.knowledge_prompts(["dog", "red", "xyzzy"], templates, "wordnet")
    assert result.prompts == {
        # f"{template.format(c)} ; {c} , {definition}", tokenized by nltk's word tokenizer.
        "dog": ["a photo of a dog. ; dog , a member of the genus Canis",
                "a sketch of the dog. ; dog , a member of the genus Canis"],
        "red": ["a photo of a red. ; red , having the color of blood ; ( of hair ) reddish",
                "a sketch of the red. ; red , having the color of blood ; ( of hair ) reddish"],
        # No synset: the plain templates, reported.
        "xyzzy": ["a photo of a xyzzy.", "a sketch of the xyzzy."],
    }
    assert result.missing == ["xyzzy"]
    assert result.coverage == (2, 3)
    assert result.summary() == {"knowledge": "wordnet", "knowledge_coverage": [2, 3],
                                "knowledge_missing": ["xyzzy"]}


def test_suffix_matches_elevater_expression():
    """ELEVATER: ' ' + ' '.join(word_tokenize(f' ; {classname} , ' + knowledge_text))."""
    from nltk.tokenize import word_tokenize

    name, gloss = "golden retriever", "an English breed having a long, silky golden coat"
    expected = " " + " ".join(word_tokenize(f" ; {name} , " + gloss, preserve_line=True))
    assert knowledge.knowledge_suffix(name, gloss) == expected
    assert expected == " ; golden retriever , an English breed having a long , silky golden coat"


def test_prompts_feed_the_zeroshot_classifier():
    import torch

    prompts = knowledge.augment_templates(
        ["cat", "dog"], ["a photo of a {}."], {"cat": None, "dog": "a domestic animal"})
    seen: list[str] = []

    def encode(texts: list[str]) -> torch.Tensor:
        seen.extend(texts)
        return torch.eye(len(texts), 4)

    weights = build_zeroshot_classifier(encode, ["cat", "dog"], prompts)
    assert seen == ["a photo of a cat.", "a photo of a dog. ; dog , a domestic animal"]
    assert weights.shape[0] * weights.shape[1] == 8


def test_none_source_keeps_plain_templates():
    result = knowledge.knowledge_prompts(["dog"], ["a {}."], "none")
    assert result.prompts == {"dog": ["a dog."]}
    assert result.summary() == {"knowledge": "none"}
    with pytest.raises(UserError, match="unknown knowledge source; choose one of none, wordnet"):
        knowledge.knowledge_prompts(["dog"], ["a {}."], "wikipedia")


def test_missing_corpus_says_where_nltk_looked_and_how_to_install(tmp_path, monkeypatch):
    empty = tmp_path / "empty_nltk_data"
    empty.mkdir()
    monkeypatch.setattr(nltk.data, "path", [str(empty)])
    with pytest.raises(UserError) as info:
        knowledge.wordnet_definitions(["dog"])
    msg = str(info.value)
    assert "WordNet corpus" in msg and str(empty) in msg
    assert "python -m nltk.downloader wordnet" in msg and "NLTK_DATA" in msg


def test_broken_corpus_is_a_user_error(tmp_path, monkeypatch):
    folder = tmp_path / "nltk_data"
    root = write_wordnet(folder)
    (root / "lexnames").write_text("00\tadj.all\n")  # the syntactic-category column is gone
    monkeypatch.setattr(nltk.data, "path", [str(folder)])
    monkeypatch.setattr(knowledge, "_READERS", {})
    with pytest.raises(UserError, match=r"WordNet corpus at .*wordnet could not be read"):
        knowledge.require_wordnet()


def test_missing_nltk_says_how_to_install(monkeypatch):
    # A None entry in sys.modules makes `import nltk...` raise ImportError.
    for name in [m for m in sys.modules if m == "nltk" or m.startswith("nltk.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(UserError) as info:
        knowledge.require_wordnet()
    msg = str(info.value)
    assert "nltk is not installed" in msg
    assert "pip install nltk && python -m nltk.downloader wordnet" in msg


def test_knowledge_flag_end_to_end(cli, nltk_data, tmp_path, monkeypatch):
    from elevater_data import use_tiny_cards, write_dataset

    from itra_bench.results import iter_records
    from itra_bench.vision_benchmark.cards import find_card

    use_tiny_cards(monkeypatch, ["cifar-10"], per_class=2)
    write_dataset(find_card("cifar-10"), tmp_path / "data", per_class=2)
    args = ["run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", "cifar10",
            "--data-root", tmp_path / "data", "--output", tmp_path / "out", "--no-cache",
            "--workers", "0", "--no-progress"]
    assert cli(*args).code == 0
    res = cli(*args, "--knowledge", "wordnet")
    assert res.code == 0, res
    recs = {r["variant"]: r for _, r in iter_records(tmp_path / "out")}
    assert set(recs) == {"zeroshot", "zeroshot-wordnet"}
    details = recs["zeroshot-wordnet"]["details"]
    assert details["knowledge"] == "wordnet"
    assert list(details["knowledge_coverage"]) == [1, 10]  # only "dog" is in the tiny WordNet
    assert details["predictions"].endswith("zeroshot-wordnet.predictions.json")
    assert recs["zeroshot"]["details"]["knowledge"] == "none"


def test_knowledge_flag_without_corpus_says_how_to_install(cli, tmp_path, monkeypatch):
    from elevater_data import use_tiny_cards, write_dataset

    from itra_bench.vision_benchmark.cards import find_card

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    monkeypatch.setattr(knowledge, "_READERS", {})
    use_tiny_cards(monkeypatch, ["cifar-10"], per_class=1)
    write_dataset(find_card("cifar-10"), tmp_path / "data", per_class=1)
    res = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", "cifar10",
              "--data-root", tmp_path / "data", "--output", tmp_path / "out", "--no-cache",
              "--workers", "0", "--no-progress", "--knowledge", "wordnet")
    assert res.code == 2 and "nltk.downloader wordnet" in res.err
