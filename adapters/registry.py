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
# Modules in adapters/ that are machinery, not adapters (the built-ins are registered by _builtins).
_INFRASTRUCTURE = {"base", "registry", "download", "expectations", "imdb", "table", "scaffold", "inspection",
                   "hygiene", "table_lines"}


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


def _local_classes() -> list[type]:
    """Classes defined in the modules of adapters/ that declare a string `name` (adapters or near misses)."""
    classes = []
    for module_info in pkgutil.iter_modules(adapters.__path__):
        if module_info.name in _INFRASTRUCTURE or module_info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"adapters.{module_info.name}")
        except Exception as exc:  # a user's module: any error at import time is theirs to fix
            raise AdapterError(
                f"adapters/{module_info.name}.py could not be imported ({type(exc).__name__}: {exc}); "
                "fix it, or move it out of adapters/ (every module there is searched for adapters)"
            ) from exc
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and isinstance(getattr(cls, "name", None), str):
                classes.append(cls)
    return classes


def _local() -> dict[str, AdapterInfo]:
    return {
        cls.name: AdapterInfo(cls.name, "local", f"{cls.__module__}:{cls.__qualname__}", cls)
        for cls in _local_classes()
        if callable(getattr(cls, "load", None))
    }


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


def load_factory(info: AdapterInfo) -> Any:
    """The class (or factory) behind `info`; a plugin's module is imported only now."""
    if info.origin != "plugin":
        return info.factory
    try:
        return info.factory.load()
    except Exception as exc:  # an installed package's import error: say which package to fix
        dist = getattr(info.factory.dist, "name", None) or "an installed package"
        raise AdapterError(
            f"plugin adapter '{info.name}' ({info.where}, from {dist}) could not be loaded "
            f"({type(exc).__name__}: {exc}); fix or reinstall that package, or uninstall it"
        ) from exc


def get_adapter(name: str, options: dict[str, Any] | None = None) -> Any:
    """Construct the adapter NAME with `options`, checking it implements the protocol."""
    found = available()
    if name not in found:
        for cls in _local_classes():
            if cls.name == name:  # declared, but not loadable: say what is missing rather than "not found"
                raise AdapterError(
                    f"adapter {cls.__module__}:{cls.__qualname__} declares name '{name}' but has no load() method; "
                    "implement `def load(self, cache_dir: Path) -> polars.DataFrame` returning columns text, label, split"
                )
        raise AdapterError(
            f"no dataset adapter named '{name}'. Known: {', '.join(sorted(found)) or 'none'}. "
            f"Add adapters/{name}.py (`reweigh new-adapter {name}`) or install a package with a "
            f"'{ENTRY_POINT_GROUP}' entry point."
        )
    info = found[name]
    factory = load_factory(info)
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
