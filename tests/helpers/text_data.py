"""Small text-task datasets in their real on-disk formats: SentEval's STS folders, STS
Benchmark csv, SICK txt, word-similarity files and the Wikipedia-sections triplet csv."""

from __future__ import annotations

import csv
import random
from pathlib import Path

SUBJECTS = ["A man", "A woman", "The child", "Two dogs", "A cat", "The chef", "A girl",
            "An old man", "The band", "A boy"]
VERBS = ["is playing", "is eating", "is cutting", "is riding", "is watching", "is cooking",
         "is painting", "is slicing"]
OBJECTS = ["a guitar", "an apple", "a horse", "the television", "some bread", "a bicycle",
           "a picture", "the onions", "a flute", "a pizza"]


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."


def sts_pairs(n: int, seed: int) -> list[tuple[str, str, float]]:
    """Pairs whose gold score is the number of shared parts (subject, verb, object) plus
    noise, so a sentence encoder correlates with it without matching it exactly."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a = (rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS))
        b = a
        while b == a:
            # Identical sentences would get cosine 1 here (one embedding per distinct text)
            # but 1 +- 1e-7 from sentence-transformers (padding differs between its calls):
            # tied ranks there, untied here. Keep every pair distinct so both see one order.
            b = tuple(x if rng.random() < 0.5 else rng.choice(pool)
                      for x, pool in zip(a, (SUBJECTS, VERBS, OBJECTS), strict=True))
        shared = sum(x == y for x, y in zip(a, b, strict=True))
        score = round(min(5.0, max(0.0, shared * 5 / 3 + rng.uniform(-0.8, 0.8))), 2)
        out.append((" ".join(a) + ".", " ".join(b) + ".", score))
    return out


def write_senteval_sts(folder: Path, name: str, pairs: list[tuple[str, str, float | None]]
                       ) -> None:
    """``STS.input.<name>.txt`` (s1 TAB s2) and ``STS.gs.<name>.txt`` (score, or an empty
    line when the score is None), as SentEval's downloads hold them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"STS.input.{name}.txt").write_text(
        "".join(f"{a}\t{b}\n" for a, b, _ in pairs), encoding="utf-8")
    (folder / f"STS.gs.{name}.txt").write_text(
        "".join("\n" if s is None else f"{s}\n" for _, _, s in pairs), encoding="utf-8")


def write_stsbenchmark(path: Path, pairs: list[tuple[str, str, float]]) -> None:
    """STS Benchmark's sts-test.csv: genre, file, year, id, score, s1, s2 (no header; some
    real rows carry extra source columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (a, b, s) in enumerate(pairs):
        extra = "\tsrc-a\tsrc-b" if i % 5 == 0 else ""
        rows.append(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s}\t{a}\t{b}{extra}\n")
    path.write_text("".join(rows), encoding="utf-8")


def write_sick(path: Path, pairs: list[tuple[str, str, float]]) -> None:
    """SICK_test_annotated.txt: a header, then pair_ID, A, B, relatedness, entailment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"]
    lines += [f"{i + 1}\t{a}\t{b}\t{s}\tNEUTRAL\n" for i, (a, b, s) in enumerate(pairs)]
    path.write_text("".join(lines), encoding="utf-8")


def write_triplets(path: Path, triplets: list[tuple[str, str, str]]) -> None:
    """test.csv of wikipedia-sections-triplets: header Sentence1,Sentence2,Sentence3 (and
    the article/section columns around them), quoted where a sentence needs it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=",", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["Sentence1", "Sentence2", "Sentence3", "Section1", "Section2"])
        for a, p, n in triplets:
            writer.writerow([a, p, n, "History", "Geography"])


def wiki_triplets(n: int, seed: int) -> list[tuple[str, str, str]]:
    """Triplets whose positive shares the anchor's topic words; sentences hold commas and
    double quotes so the CSV needs quoting."""
    rng = random.Random(seed)
    topics = {
        "history": ["The empire was founded in 1204, after the war.",
                    "Its rulers fought several wars against the \"northern\" kingdoms.",
                    "The dynasty collapsed in the 15th century.",
                    "Historians date the first settlement to the Bronze Age."],
        "geography": ["The river flows north, through a wide valley.",
                      "The highest mountain rises to 2,400 metres.",
                      "The climate is mild, with wet winters.",
                      "Forests cover a third of the region's land."],
        "economy": ["Tourism is the largest industry, followed by farming.",
                    "The port handles most of the country's exports.",
                    "Unemployment fell to 4 percent in 2019.",
                    "The \"free trade\" zone attracted foreign banks."],
    }
    names = list(topics)
    out = []
    for _ in range(n):
        t, other = rng.sample(names, 2)
        a, p = rng.sample(topics[t], 2)
        out.append((a, p, rng.choice(topics[other])))
    return out
