"""One module-swap walk for every model transform that replaces layers by twins (quantised
Conv/Linear, RNS Conv/Linear): torchao's shape, a converter and a filter over fully qualified names.

Kept apart from capture: it rewrites an ``nn.Module`` in place before any graph exists, so a user's
model keeps its Python structure (and trains as before) after the swap.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

#: ``filter_fn(module, fqn) -> bool``: whether a layer may be converted (torchao's signature).
FilterFn = Callable[[nn.Module, str], bool]


def candidates(model: nn.Module, types: tuple[type[nn.Module], ...],
               filter_fn: FilterFn | None = None) -> list[str]:
    """Fully qualified names of the layers of exactly these types (subclasses are already someone's
    twin) that `filter_fn` accepts, in ``named_modules`` order; a layer reached by two names (tied
    modules) is listed under both."""
    return [name for name, m in model.named_modules(remove_duplicate=False)
            if type(m) in types and (filter_fn is None or filter_fn(m, name))]


def swap_modules(model: nn.Module, names: list[str], convert: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Replace each named submodule by ``convert(module)`` in place; returns the model (or the
    converted root, when ``""`` - the model itself - is among the names). A module reached by
    several names is converted once and stays shared."""
    done: dict[int, nn.Module] = {}
    for name in names:
        if not name:
            return convert(model)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        if id(old) not in done:
            done[id(old)] = convert(old)
        setattr(parent, attr, done[id(old)])
    return model
