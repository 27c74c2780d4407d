"""Bad input files end in one message naming the file and line (exit 2, no traceback), and a
UTF-8 byte-order mark just works: task YAML, caption CSVs (`itra-bench` and `itra-train`), STS
files; and values the readers' libraries would turn into a Python exception or a silently
wrong number (5,000-digit integers, repeated ids, "nan" scores) are refused by name."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest
from PIL import Image
from text_data import sts_pairs, write_stsbenchmark
from train_data import TINY

from itra_bench.errors import UserError

PIXEL = ("--plugin", "itra_test_plugin")


def bench(cli, tmp_path: Path, data_root: Path, *tasks: str):
    return cli("run", "--model", "pixel", *PIXEL, "--tasks", *tasks, "--data-root", data_root,
               "--output", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--workers",
               "0", "--no-progress")


def train_on(train, csv: Path, tmp_path: Path, *extra: str):
    return train("--train-data", csv, "--logs", tmp_path / "logs", "--name", "run", *TINY,
                 *extra)


def one_clean_error(res, *needles: str) -> str:
    """The run failed with exit 2 and one message (no traceback) containing ``needles``."""
    err = " ".join(res.err.split())
    assert res.code == 2, res
    assert "Traceback" not in res.err and "Traceback" not in res.out, res
    for needle in needles:
        assert needle in err, (needle, res)
    return err


def caption_table(folder: Path, captions: list[str], encoding: str = "utf-8",
                  bom: bytes = b"") -> Path:
    """A tab-separated caption table of small images, one row per caption."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = ["filepath\ttitle"]
    for i, caption in enumerate(captions):
        Image.new("RGB", (16, 16), (30 * i % 255, 10, 200 - 20 * i % 200)).save(
            folder / "img" / f"{i}.png")
        rows.append(f"img/{i}.png\t{caption}")
    path = folder / "captions.tsv"
    path.write_bytes(bom + ("\n".join(rows) + "\n").encode(encoding))
    return path


def retrieval_task(tmp_path: Path, file: str = "captions.tsv") -> Path:
    task = tmp_path / "caps.yaml"
    task.write_text(f"name: caps\nprotocol: retrieval\nfile: {file}\n")
    return task


CAPTIONS = [f"a picture number {i}" for i in range(6)]


# -- task YAML -------------------------------------------------------------------------------

def test_task_yaml_not_utf8_names_file_and_line(cli, tmp_path):
    task = tmp_path / "pets.yaml"
    task.write_bytes("name: pets\nprotocol: zeroshot\nroot: pets\ndescription: Chats é\n"
                     .encode("latin-1"))
    one_clean_error(bench(cli, tmp_path, tmp_path, task), "pets.yaml, line 4",
                    "not valid utf-8", "UTF-8")


def test_task_yaml_with_bom_is_read(cli, tmp_path):
    from itra_bench.yaml_tasks import load_task_file

    task = tmp_path / "pets.yaml"
    task.write_bytes(codecs.BOM_UTF8 + b"name: pets\nprotocol: knn\nroot: pets\n")
    assert load_task_file(task).name == "pets"


def test_task_type_given_as_a_list(cli, tmp_path):
    task = tmp_path / "pets.yaml"
    task.write_text("name: pets\ntask_type: [zeroshot]\nroot: pets\n")
    one_clean_error(bench(cli, tmp_path, tmp_path, task), "pets.yaml", "'task_type'",
                    "a string", "zeroshot")


def test_retrieval_separator_must_be_one_character(cli, tmp_path):
    task = tmp_path / "caps.yaml"
    task.write_text("name: caps\nprotocol: retrieval\nfile: c.tsv\nseparator: '\\t\\t'\n")
    one_clean_error(bench(cli, tmp_path, tmp_path, task), "caps.yaml", "'separator'",
                    "one character")


# -- caption CSVs: evaluation and training ---------------------------------------------------

def test_latin1_caption_csv_eval_names_file_and_line(cli, tmp_path):
    captions = [*CAPTIONS[:3], "un café crème", *CAPTIONS[3:]]
    caption_table(tmp_path, captions, encoding="latin-1")
    one_clean_error(bench(cli, tmp_path, tmp_path, retrieval_task(tmp_path)),
                    "captions.tsv, line 5", "0xe9", "not valid utf-8", "iconv")


def test_latin1_caption_csv_train_names_file_and_line(train, tmp_path):
    captions = [*CAPTIONS[:3], "un café crème", *CAPTIONS[3:]]
    csv = caption_table(tmp_path, captions, encoding="latin-1")
    one_clean_error(train_on(train, csv, tmp_path), "captions.tsv, line 5", "not valid utf-8")


def test_caption_csv_with_bom_eval_runs(cli, tmp_path):
    caption_table(tmp_path, CAPTIONS, bom=codecs.BOM_UTF8)
    res = bench(cli, tmp_path, tmp_path, retrieval_task(tmp_path))
    assert res.code == 0, res


def test_caption_csv_with_bom_train_reads_the_header(tmp_path):
    from itra_train.data import CsvImageText

    csv = caption_table(tmp_path, CAPTIONS, bom=codecs.BOM_UTF8)
    data = CsvImageText(csv)
    assert data.captions == CAPTIONS and data.rows == list(range(2, 8))


def _unterminated_quote(tmp_path: Path) -> Path:
    # A caption opens a quote that never closes, then 128 KB more text: the csv module's
    # field limit (131,072 characters) is hit far below the line where the quote opened.
    captions = [*CAPTIONS[:2], '"an unclosed quote', *(f"caption {i} " + "x" * 2000
                                                       for i in range(70))]
    return caption_table(tmp_path, captions)


def test_unterminated_quote_eval_names_the_opening_line(cli, tmp_path):
    _unterminated_quote(tmp_path)
    one_clean_error(bench(cli, tmp_path, tmp_path, retrieval_task(tmp_path)),
                    "captions.tsv, line 4", "never closed")


def test_unterminated_quote_train_names_the_opening_line(train, tmp_path):
    csv = _unterminated_quote(tmp_path)
    one_clean_error(train_on(train, csv, tmp_path), "captions.tsv, line 4", "never closed")


def test_stray_quote_is_refused_not_swallowing_rows(tmp_path):
    """A short file with a stray quote: the csv module's lenient mode would read the rest of
    the file as one caption, giving a table with fewer rows and no error."""
    from itra_bench.datasets.captions_csv import CaptionsCSV

    csv = caption_table(tmp_path, [*CAPTIONS[:2], '"oops', *CAPTIONS[2:]])
    with pytest.raises(UserError, match=r"captions.tsv, line 4: .*never closed"):
        CaptionsCSV(csv)


# -- STS files -------------------------------------------------------------------------------

def test_sts_file_not_utf8_names_line_and_suggests_encoding(cli, tmp_path):
    pairs = sts_pairs(8, seed=1)
    pairs[4] = ("Un garçon mange.", pairs[4][1], pairs[4][2])
    path = tmp_path / "data" / "sts-dev.csv"
    write_stsbenchmark(path, pairs)
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))
    task = tmp_path / "dev.yaml"
    task.write_text("name: stsb-dev\nprotocol: sts\nformat: stsbenchmark\nroot: .\n"
                    "files: [sts-dev.csv]\n")
    res = bench(cli, tmp_path, tmp_path / "data", task)
    one_clean_error(res, "sts-dev.csv, line 5", "0xe7", "encoding: latin-1")

    # With the suggested key, the file is read as Latin-1.
    task.write_text(task.read_text() + "encoding: latin-1\n")
    from itra_bench.tasks.sts.plugin import sts_task_from_file
    from itra_bench.yaml_tasks import load_task_file

    sts = load_task_file(task, {"sts": sts_task_from_file})
    assert sts.load(tmp_path / "data")[0].sentences1[4] == "Un garçon mange."
    res = bench(cli, tmp_path, tmp_path / "data", task)
    assert res.code == 0, res


def test_sts_unknown_encoding_is_named(cli, tmp_path):
    task = tmp_path / "dev.yaml"
    task.write_text("name: stsb-dev\nprotocol: sts\nformat: stsbenchmark\nroot: .\n"
                    "files: [sts-dev.csv]\nencoding: latin-9000\n")
    one_clean_error(bench(cli, tmp_path, tmp_path, task), "dev.yaml", "'encoding'",
                    "latin-9000")


# -- values the parsers' libraries reject with Python's own exceptions ------------------------


@pytest.mark.parametrize("value", ["1" * 5000, "2001-02-30", "!!int x", "!!float x",
                                   "!!timestamp x", "[" * 5000])
def test_yaml_values_python_cannot_build(tmp_path, value):
    from itra_bench.yaml_tasks import load_task_file

    task = tmp_path / "pets.yaml"
    task.write_text(f"name: pets\nprotocol: knn\nroot: pets\nk: {value}\n")
    with pytest.raises(UserError, match="pets.yaml: not"):
        load_task_file(task)


def test_template_with_an_attribute_field_is_refused_before_encoding(tmp_path):
    from itra_bench.yaml_tasks import load_task_file

    task = tmp_path / "pets.yaml"
    task.write_text("name: pets\nprotocol: zeroshot\nroot: pets\ntemplates: ['a {c.x} {}']\n")
    with pytest.raises(UserError, match="pets.yaml: template 'a {c.x} {}'"):
        load_task_file(task)


def test_json_with_a_5000_digit_integer(tmp_path):
    from itra_bench.tasks.coco.captions import CocoCaptions
    from itra_bench.tasks.snli_ve.plugin import read_snli_ve

    coco = tmp_path / "captions.json"
    coco.write_text('{"images": [{"id": ' + "1" * 5000 + ', "file_name": "a.jpg"}], '
                    '"annotations": []}')
    with pytest.raises(UserError, match="captions.json: not valid JSON"):
        CocoCaptions(coco, tmp_path)
    snli = tmp_path / "snli_ve_dev.jsonl"
    snli.write_text('{"Flickr30K_ID": ' + "1" * 5000 + "}\n")
    with pytest.raises(UserError, match="snli_ve_dev.jsonl, line 1: not valid JSON"):
        read_snli_ve(snli)


def test_msmarco_id_beyond_int64(tmp_path):
    from itra_bench.tasks.msmarco.readers import scan_collection

    collection = tmp_path / "collection.tsv"
    collection.write_text("0\tfine\n9223372036854775808\ttoo big for int64\n")
    with pytest.raises(UserError, match=r"collection.tsv:2: pid .* below 2\*\*63"):
        scan_collection(collection, tmp_path / "pids.i64")


# -- duplicate ids that the readers' libraries would resolve silently -------------------------

def test_coco_repeated_annotation_id_is_refused(tmp_path):
    """pycocotools keys captions by annotation id: two captions sharing one would both read
    as the last, a silently wrong caption set."""
    from itra_bench.tasks.coco.captions import CocoCaptions

    path = tmp_path / "captions.json"
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}],
           "annotations": [{"id": 5, "image_id": 1, "caption": "a cat"},
                           {"id": 5, "image_id": 1, "caption": "a dog"}]}
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"annotations\[1\] repeats annotation id 5"):
        CocoCaptions(path, tmp_path)
    doc["annotations"][1]["id"] = 6
    doc["images"].append({"id": 1, "file_name": "b.jpg"})
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"images\[1\] repeats image id 1"):
        CocoCaptions(path, tmp_path)
    doc["images"] = [{"id": "1", "file_name": "a.jpg"}]
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"images\[0\].id must be an integer"):
        CocoCaptions(path, tmp_path)


def test_vqa_repeated_question_id_is_refused(tmp_path):
    from itra_bench.tasks.tapc.vqav2 import read_annotations

    ann = {"question_id": 1, "image_id": 2, "question_type": "what", "answer_type": "other",
           "multiple_choice_answer": "red", "answers": [{"answer": "red"}]}
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"annotations": [ann, {**ann, "multiple_choice_answer": "blue"}]}))
    with pytest.raises(UserError, match=r"annotations\[1\] repeats question_id 1"):
        read_annotations(path)


def test_sts_gold_score_nan_is_refused(tmp_path):
    """float() reads "nan": the correlation would be nan, with exit 0."""
    from itra_bench.tasks.sts.plugin import read_senteval_sts

    (tmp_path / "STS.input.x.txt").write_text("a\tb\nc\td\ne\tf\n")
    (tmp_path / "STS.gs.x.txt").write_text("1.0\nnan\n3.0\n")
    with pytest.raises(UserError, match=r"STS.gs.x.txt:2: gold score 'nan' is not a number"):
        read_senteval_sts(tmp_path, "x")


def test_snli_ve_label_of_the_wrong_type(tmp_path):
    from itra_bench.tasks.snli_ve.plugin import read_snli_ve

    path = tmp_path / "snli_ve_dev.jsonl"
    path.write_text(json.dumps({"Flickr30K_ID": "1", "sentence1": "a", "sentence2": "b",
                                "gold_label": ["entailment"]}) + "\n")
    with pytest.raises(UserError, match="snli_ve_dev.jsonl, line 1: gold_label"):
        read_snli_ve(path)


def test_msmarco_files_with_a_bom_are_read(tmp_path):
    from itra_bench.tasks.msmarco.readers import read_qrels, read_queries

    (tmp_path / "queries.tsv").write_bytes(codecs.BOM_UTF8 + b"7\twhat is a cafe\n")
    (tmp_path / "qrels.tsv").write_bytes(codecs.BOM_UTF8 + b"7 0 3 1\n")
    assert read_queries(tmp_path / "queries.tsv") == {7: "what is a cafe"}
    assert read_qrels(tmp_path / "qrels.tsv") == {7: {3: 1}}


def test_sts_file_with_one_scored_pair_is_a_user_error(cli, tmp_path):
    """A correlation needs two pairs: the message names the gold file (was a ValueError,
    reported as a plugin bug)."""
    folder = tmp_path / "data" / "STS"
    folder.mkdir(parents=True)
    (folder / "STS.input.x.txt").write_text("a b\tc d\ne f\tg h\n")
    (folder / "STS.gs.x.txt").write_text("1.0\n\n")
    task = tmp_path / "x.yaml"
    task.write_text("name: sts-x\nprotocol: sts\nformat: senteval\nroot: STS\nfiles: [x]\n")
    one_clean_error(bench(cli, tmp_path, tmp_path / "data", task), "STS.gs.x.txt: 1 scored",
                    "at least 2")


def test_training_csv_naming_an_image_longer_than_the_file_system_allows(tmp_path):
    # Found by the thorough fuzz run: looking the image up raised OSError (File name too long).
    from itra_bench.errors import UserError
    from itra_train.data import CsvImageText

    csv_path = tmp_path / "train.csv"
    csv_path.write_text("filepath\ttitle\n" + "[" * 5000 + "img/a.jpg\ta caption\n")
    with pytest.raises(UserError, match="line 2"):
        CsvImageText(csv_path)
