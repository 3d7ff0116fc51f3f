"""A griffe extension: every public name documented on the site must have a docstring.

mkdocstrings loads ``async_hi`` and ``conformance`` with griffe; this extension
runs once per loaded package and logs a warning (``mkdocs build --strict`` turns
it into an error) for each name it finds undocumented:

1. every name in the ``__all__`` of the modules listed in ``modules`` (the
   public surface the API reference renders);
2. every public method and property of those names that are classes, defined
   in the class itself (fields are described by the class docstring). A method
   without a docstring takes the docstring of the same method of a base class
   (real inheritance) or of a ``Protocol`` of the same package that the class
   implements (has every method of), so that
   ``TokenBucketLimiter.acquire`` shows ``RateLimiter.acquire``'s contract
   instead of repeating it.

Configured in ``mkdocs.yml`` under the python handler's ``extensions``.
"""

from __future__ import annotations

from typing import Any

import griffe

_log = griffe.get_logger("public_docstrings")


class PublicDocstrings(griffe.Extension):
    """Warn about public names without a docstring (see the module docstring)."""

    def __init__(self, modules: list[str]) -> None:
        self.modules = list(modules)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        protocols = [c for c in _classes(pkg) if any(_base_name(b) == "Protocol" for b in c.bases)]
        for path in self.modules:
            if path.split(".")[0] != pkg.path:
                continue
            module = pkg if path == pkg.path else pkg[path[len(pkg.path) + 1 :]]
            for name in sorted(str(e) for e in (module.exports or ())):
                obj = _target(module[name])
                if not _has_doc(obj):
                    _log.warning(f"{path}.{name}: public name without a docstring")
                if obj.is_class:
                    self._members(f"{path}.{name}", obj, protocols)

    def _members(self, where: str, cls: griffe.Object, protocols: list[griffe.Class]) -> None:
        for name, member in cls.members.items():
            if name.startswith("_") or member.is_alias:
                continue
            if not (member.is_function or "property" in member.labels):
                continue  # fields are described in the class docstring's Attributes/Args
            if _has_doc(member):
                continue
            inherited = _inherited_doc(cls, name, protocols)
            if inherited is not None:
                member.docstring = griffe.Docstring(inherited.value, parent=member)
                continue
            kind = "property" if "property" in member.labels else "method"
            _log.warning(f"{where}.{name}: public {kind} without a docstring")


def _target(obj: Any) -> Any:
    return obj.final_target if obj.is_alias else obj


def _has_doc(obj: Any) -> bool:
    return obj.docstring is not None and obj.docstring.value.strip() != ""


def _base_name(base: Any) -> str:
    return str(base).rsplit(".", 1)[-1]


def _classes(module: griffe.Module) -> list[griffe.Class]:
    found: list[griffe.Class] = []
    for member in module.members.values():
        if member.is_alias:
            continue
        if member.is_module:
            found.extend(_classes(member))  # type: ignore[arg-type]
        elif member.is_class:
            found.append(member)  # type: ignore[arg-type]
    return found


def _inherited_doc(cls: Any, name: str, protocols: list[griffe.Class]) -> griffe.Docstring | None:
    try:
        bases = cls.mro()
    except Exception:  # an external base griffe cannot resolve: no inherited docstring
        bases = []
    for base in bases:
        member = base.members.get(name)
        if member is not None and not member.is_alias and _has_doc(member):
            return member.docstring  # type: ignore[no-any-return]
    own = {n for n, m in cls.members.items() if not m.is_alias and m.is_function}
    for proto in protocols:
        methods = {n for n, m in proto.members.items() if m.is_function and not n.startswith("_")}
        if methods and methods <= own and name in methods and _has_doc(proto.members[name]):
            return proto.members[name].docstring  # type: ignore[no-any-return]
    return None
