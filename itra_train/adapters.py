"""Parameter-efficient tuning of the text tower through peft (LoRA, (IA)^3, prefix and
prompt tuning), or AdapterHub's methods through :mod:`itra_train.adapterhub`. The tower's own
weights are frozen; only the adapter's train."""

from __future__ import annotations

import types
from typing import Any

from torch import nn
from yacs.config import CfgNode

from itra_bench import EncoderModel, UserError

from .config import ADAPTERHUB_ADAPTERS, ADAPTERS

#: The linear layers of an OpenCLIP text transformer's MLPs, where LoRA and (IA)^3 go (its
#: attention runs through nn.MultiheadAttention's fused kernel, which peft cannot wrap).
OPENCLIP_TARGETS = ["c_fc", "c_proj"]


def _transformers_model(root: nn.Module) -> tuple[nn.Module, str, nn.Module] | None:
    """(parent, attribute, model) of the first transformers model inside ``root``."""
    from transformers import PreTrainedModel

    for parent in root.modules():
        for name, child in parent.named_children():
            if isinstance(child, PreTrainedModel):
                return parent, name, child
    return None


def _config(method: str, cfg: CfgNode, targets: list[str] | None) -> Any:
    import peft

    task = None if targets else peft.TaskType.FEATURE_EXTRACTION
    if method == "lora":
        return peft.LoraConfig(r=cfg.adapter_rank, lora_alpha=cfg.adapter_alpha,
                               lora_dropout=0.0, target_modules=targets, task_type=task)
    if method == "ia3":
        return peft.IA3Config(target_modules=targets,
                              feedforward_modules=["c_proj"] if targets else None,
                              task_type=task)
    if method == "prefix_tuning":
        return peft.PrefixTuningConfig(num_virtual_tokens=cfg.adapter_tokens, task_type=task)
    return peft.PromptTuningConfig(num_virtual_tokens=cfg.adapter_tokens, task_type=task)


def _forward_real_tokens(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """A prompt-tuned model's forward, without the virtual tokens' output states."""
    # peft prepends the virtual tokens to the sequence, so its states no longer line up with
    # the tokenizer's attention mask: mean pooling fails (hf:) or silently averages padding
    # too (sentence-transformers), and CLS pooling picks a virtual token. The virtual tokens
    # still steer the real ones through attention.
    output = type(self).forward(self, *args, **kwargs)
    tokens = self.active_peft_config.num_virtual_tokens
    output["last_hidden_state"] = output["last_hidden_state"][:, tokens:]
    return output


def check_adapter(cfg: CfgNode) -> None:
    """Refuse at start-up an ``--adapter`` that cannot be built here: an AdapterHub method
    without its library (or beside a transformers it does not support), or with
    ``--adapter-options`` its config class does not take."""
    if cfg.adapter in ADAPTERHUB_ADAPTERS:
        from . import adapterhub

        adapterhub.check(cfg)


def add_adapter(encoder: EncoderModel, cfg: CfgNode) -> None:
    """Add ``cfg.adapter`` to the text tower ``encoder`` in place and freeze its own weights."""
    if cfg.adapter in ADAPTERHUB_ADAPTERS:
        from . import adapterhub

        adapterhub.add_adapter(encoder, cfg)
        return
    import peft

    method = ADAPTERS[cfg.adapter]
    found = _transformers_model(encoder)
    if found is not None:
        parent, attribute, model = found
        try:
            tuned = peft.get_peft_model(model, _config(method, cfg, None))
        except ValueError as exc:
            raise UserError(f"--adapter {cfg.adapter}: peft cannot add it to "
                            f"{type(model).__name__}: {exc}") from exc
        if method == "prompt_tuning":
            # An instance attribute, not a forward hook: sentence-transformers calls
            # model.forward directly, which skips hooks.
            tuned.forward = types.MethodType(_forward_real_tokens, tuned)
        setattr(parent, attribute, tuned)
        return
    text = getattr(getattr(encoder, "clip", None), "transformer", None)
    if text is None:
        raise UserError(f"--adapter {cfg.adapter}: the text tower ({type(encoder).__name__}) is "
                        "neither a transformers model nor an OpenCLIP text transformer")
    if method not in ("lora", "ia3"):
        raise UserError(f"--adapter {cfg.adapter} needs a transformers text tower "
                        "(--text-model-builder huggingface or sbert); an OpenCLIP text tower "
                        "takes lora or ia3")
    peft.inject_adapter_in_model(_config(method, cfg, OPENCLIP_TARGETS), text)
    marker = "lora_" if method == "lora" else "ia3_"
    # Only the text side's own weights freeze: a CLIP used for both towers keeps its visual.
    visual = {id(p) for p in encoder.clip.visual.parameters()}
    for name, param in encoder.named_parameters():
        if id(param) not in visual:
            param.requires_grad_(marker in name)
