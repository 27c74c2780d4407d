"""Prompt templates (torch-free: task files and cards are checked with it while tasks are
listed; :mod:`itra_bench.protocols.zeroshot` re-exports it)."""

from __future__ import annotations


def fill_template(template: str, classname: str) -> str:
    """Put ``classname`` into a prompt template written with ``{}`` or ``{c}``.

    ``"a photo of a {}."`` and ``"a photo of a {c}."`` both give ``"a photo of a dog."``.
    A template with no placeholder, or with any other field, is a ``ValueError``.
    """
    try:
        prompt = template.format(classname, c=classname)
        # Filling with two different names tells whether the class name lands in the prompt.
        probe = template.format(classname + "\x00", c=classname + "\x00")
    except (IndexError, KeyError, ValueError) as exc:
        raise ValueError(
            f"prompt template {template!r} is not a format string with one '{{}}' or '{{c}}' "
            f"placeholder for the class name ({type(exc).__name__}: {exc}); "
            "write literal braces as '{{' and '}}'"
        ) from None
    if probe == prompt:
        raise ValueError(
            f"prompt template {template!r} has no '{{}}' or '{{c}}' placeholder for the class "
            "name, so every class would get the same prompt"
        )
    return prompt
