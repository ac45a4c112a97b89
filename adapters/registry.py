"""Find an adapter by name: built-ins, modules in this `adapters/` folder, and installed plugins.

Lookup order for `dataset.name: NAME`:
1. built-ins: `imdb`, `table`;
2. a module `adapters/NAME.py` (or any module in `adapters/`) defining a class whose `name` is NAME;
3. the entry-point group `reweigh.adapters` of installed packages: `NAME = "pkg.module:AdapterClass"`.
The class is constructed with `dataset.options` from params.yaml as keyword arguments.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import adapters
from adapters.base import AdapterError, check_adapter

ENTRY_POINT_GROUP = "reweigh.adapters"
_INFRASTRUCTURE = {"base", "registry", "download", "expectations", "imdb", "table"}


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    origin: str  # "built-in", "local", "plugin"
    where: str  # module:Class
    factory: Any


def _builtins() -> dict[str, AdapterInfo]:
    from adapters.imdb import ImdbAdapter
    from adapters.table import TableAdapter

    return {
        cls.name: AdapterInfo(cls.name, "built-in", f"{cls.__module__}:{cls.__qualname__}", cls)
        for cls in (ImdbAdapter, TableAdapter)
    }


def _local() -> dict[str, AdapterInfo]:
    found: dict[str, AdapterInfo] = {}
    for module_info in pkgutil.iter_modules(adapters.__path__):
        if module_info.name in _INFRASTRUCTURE or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"adapters.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            name = getattr(cls, "name", None)
            if cls.__module__ == module.__name__ and isinstance(name, str) and hasattr(cls, "load"):
                found[name] = AdapterInfo(name, "local", f"{cls.__module__}:{cls.__qualname__}", cls)
    return found


def _plugins() -> dict[str, AdapterInfo]:
    return {
        ep.name: AdapterInfo(ep.name, "plugin", ep.value, ep)
        for ep in entry_points(group=ENTRY_POINT_GROUP)
    }


def available() -> dict[str, AdapterInfo]:
    """Every adapter that can be named in params.yaml; earlier sources win on a clash."""
    found = _plugins()
    found.update(_local())
    found.update(_builtins())
    return found


def get_adapter(name: str, options: dict[str, Any] | None = None) -> Any:
    """Construct the adapter NAME with `options`, checking it implements the protocol."""
    found = available()
    if name not in found:
        raise AdapterError(
            f"no dataset adapter named '{name}'. Known: {', '.join(sorted(found)) or 'none'}. "
            f"Add adapters/{name}.py (`reweigh new-adapter {name}`) or install a package with a "
            f"'{ENTRY_POINT_GROUP}' entry point."
        )
    info = found[name]
    factory = info.factory.load() if info.origin == "plugin" else info.factory
    try:
        adapter = factory(**(options or {}))
    except TypeError as exc:
        params = inspect.signature(factory).parameters
        raise AdapterError(
            f"dataset '{name}': dataset.options do not fit {info.where}: {exc}. Accepted options: {', '.join(params) or 'none'}"
        ) from exc
    check_adapter(adapter, f"'{name}' ({info.where})")
    if adapter.name != name:
        raise AdapterError(f"adapter {info.where} declares name '{adapter.name}' but was registered as '{name}'")
    return adapter
