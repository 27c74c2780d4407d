"""A loss named by a LazyFactory behaves like the class itself (options checked, built,
inspected), yet its module is imported only when the loss is built."""

from __future__ import annotations

import inspect
import sys
import textwrap

import pytest
from torch import nn

from itra_bench.errors import UserError
from itra_bench.losses import LazyFactory, LossSpec, build_loss, check_options
from itra_bench.registry import load_registry


class Scaled(nn.Module):
    def __init__(self, scale: float = 1.0, **_: object) -> None:
        super().__init__()
        self.scale = scale


def wrapper(**kwargs: object) -> nn.Module:
    return Scaled(**kwargs)


def test_a_lazy_class_is_built_and_its_options_checked_like_the_class():
    lazy = LazyFactory(__name__, "Scaled")
    spec = LossSpec("scaled", lazy)
    assert inspect.signature(lazy) == inspect.signature(Scaled)
    assert lazy.__module__ == __name__
    built = build_loss(spec, 4, 4, 0, {"scale": 2.0})
    assert type(built) is Scaled and built.scale == 2.0
    with pytest.raises(UserError, match="Did you mean 'scale'"):
        check_options(spec, {"sclae": 2.0})


def test_a_lazy_wrapper_has_its_options_checked_against_the_class_it_builds():
    spec = LossSpec("scaled", LazyFactory(__name__, "wrapper"))
    assert build_loss(spec, 4, 4, 0, {"scale": 3.0}).scale == 3.0
    with pytest.raises(UserError, match="'scale'"):
        build_loss(spec, 4, 4, 0, {"sclae": 2.0})


def test_the_module_is_imported_only_when_the_loss_is_built(tmp_path, monkeypatch):
    name = "itra_lazy_loss_probe"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        from torch import nn

        class Probe(nn.Module):
            def __init__(self, width: int = 2, **_: object) -> None:
                super().__init__()
                self.width = width
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    spec = LossSpec("probe", LazyFactory(name, "Probe"), description="d")
    assert (spec.name, spec.description, repr(spec.factory)) == (
        "probe", "d", f"LazyFactory({name!r}, 'Probe')")
    assert spec == LossSpec("probe", LazyFactory(name, "Probe"), description="d")
    assert name not in sys.modules
    assert spec.factory(student_dim=4, teacher_dim=4, prototypes=0, width=5).width == 5
    assert name in sys.modules


def test_a_lazy_factory_naming_nothing_says_what_is_missing():
    with pytest.raises(ImportError, match=r"LazyFactory\('.*', 'Nope'\).*no callable 'Nope'"):
        LazyFactory(__name__, "Nope")(student_dim=4, teacher_dim=4, prototypes=0)


def test_every_builtin_lazy_loss_names_a_loss_class_of_its_module():
    builtin = {name: p.item.factory for name, p in load_registry().losses.items()
               if p.item.factory.__module__.startswith("itra_bench.plugins.losses")}
    assert len(builtin) == 11
    for name, factory in builtin.items():
        assert isinstance(factory, LazyFactory), name
        target = factory.resolve()
        assert isinstance(target, type) and issubclass(target, nn.Module), name
        assert target.__module__ == factory.module, name
