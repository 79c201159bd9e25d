"""A package's source read with ``ast``, never imported: definitions, classes and signatures.

What the vLLM contract check needs to know of vLLM's source: where a name is defined (following
``from ... import`` and vLLM's lazy ``MODULE_ATTRS`` exports), a class's fields, attributes and
methods (through its bases inside the package), what its constructor or a method accepts (following
``**kwargs`` into the class they are handed to), and the strings a ``Literal`` annotation allows.
Stdlib only.
"""

from __future__ import annotations

import ast
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MAX_DEPTH = 12
"""How many imports or base classes a lookup follows before giving up."""


class PackageSource:
    """The Python modules of a package by dotted name, parsed on demand."""

    def __init__(self, read: Callable[[str], str | None]):
        self._read = read
        self._modules: dict[str, tuple[ast.Module, bool] | None] = {}

    @classmethod
    def from_files(cls, files: Mapping[str, str]) -> PackageSource:
        """From ``{"vllm/outputs.py": source text, ...}`` (tests build small fake packages this way)."""
        return cls(files.get)

    @classmethod
    def from_wheel(cls, wheel: Path) -> PackageSource:
        """From a wheel file, opened as a zip archive (it stays open while the source is in use)."""
        archive = zipfile.ZipFile(wheel)
        names = set(archive.namelist())
        return cls(lambda path: archive.read(path).decode() if path in names else None)

    def module(self, dotted: str) -> ast.Module | None:
        """The module ``dotted`` (a ``.py`` file or a package's ``__init__.py``), None if absent."""
        loaded = self._load(dotted)
        return loaded[0] if loaded else None

    def is_package(self, dotted: str) -> bool:
        loaded = self._load(dotted)
        return bool(loaded and loaded[1])

    def _load(self, dotted: str) -> tuple[ast.Module, bool] | None:
        if dotted not in self._modules:
            base = dotted.replace(".", "/")
            self._modules[dotted] = None
            for path, package in ((f"{base}.py", False), (f"{base}/__init__.py", True)):
                text = self._read(path)
                if text is not None:
                    self._modules[dotted] = (ast.parse(text, filename=path), package)
                    break
        return self._modules[dotted]


def top_level(tree: ast.Module, type_checking: bool = True) -> Iterator[ast.stmt]:
    """Module-level statements, with those inside top-level ``if``/``try`` blocks (``if
    TYPE_CHECKING:`` blocks only when ``type_checking``: they do not run)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        yield node
        if isinstance(node, ast.If) and (type_checking or "TYPE_CHECKING" not in ast.unparse(node.test)):
            pending += [*node.body, *node.orelse]
        elif isinstance(node, ast.Try):
            pending += [*node.body, *node.orelse, *node.finalbody]


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return [node.name]
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def lazy_exports(tree: ast.Module) -> dict[str, str]:
    """vLLM's ``MODULE_ATTRS = {"LLM": ".entrypoints.llm:LLM", ...}`` (served by ``__getattr__``)."""
    for node in top_level(tree):
        if (
            isinstance(node, ast.Assign)
            and "MODULE_ATTRS" in _bound_names(node)
            and isinstance(node.value, ast.Dict)
        ):
            return {k.value: v.value for k, v in zip(node.value.keys, node.value.values, strict=True)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)}  # fmt: skip
    return {}


def runtime_names(tree: ast.Module) -> set[str]:
    """Names ``module.<name>`` gives at run time: bound outside ``if TYPE_CHECKING``, or lazy."""
    names = {name for node in top_level(tree, type_checking=False) for name in _bound_names(node)}
    return names | set(lazy_exports(tree))


def absolute_module(source: PackageSource, module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".") if source.is_package(module) else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def find_definition(source: PackageSource, module: str, name: str, depth: int = 0):
    """``(module, node)`` where ``module.name`` is defined (class, function or assignment), or None."""
    tree = source.module(module)
    if tree is None or depth > MAX_DEPTH:
        return None
    statements = list(top_level(tree))
    for node in statements:
        if not isinstance(node, ast.Import | ast.ImportFrom) and name in _bound_names(node):
            return module, node
    for node in statements:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    origin = absolute_module(source, module, node)
                    found = find_definition(source, origin, alias.name, depth + 1)
                    if found:
                        return found
    lazy = lazy_exports(tree).get(name)
    if lazy:
        target, attribute = lazy.split(":")
        return find_definition(
            source, module + target if target.startswith(".") else target, attribute, depth + 1
        )
    return None


@dataclass
class ClassApi:
    """What a class offers, its bases inside the package included.

    ``kind``: ``dataclass``, ``struct`` (msgspec), ``typeddict`` or ``class``; ``fields``: annotated
    class-level names -> (module, annotation); ``required``: TypedDict keys that must be given."""

    module: str
    name: str
    kind: str = "class"
    fields: dict[str, tuple[str, ast.expr]] = field(default_factory=dict)
    required: set[str] = field(default_factory=set)
    attributes: set[str] = field(default_factory=set)
    methods: dict[str, tuple[str, ast.FunctionDef]] = field(default_factory=dict)
    own_init: bool = False

    def members(self) -> set[str]:
        return set(self.fields) | self.attributes | set(self.methods)


def _head(node: ast.expr) -> str:
    return ast.unparse(node.value if isinstance(node, ast.Subscript) else node).split(".")[-1]


def class_api(source: PackageSource, module: str, name: str, depth: int = 0) -> ClassApi | None:
    """The class ``module.name``, or None when that name is not a class of the package."""
    found = find_definition(source, module, name)
    if found is None or not isinstance(found[1], ast.ClassDef) or depth > MAX_DEPTH:
        return None
    module, node = found
    api = ClassApi(module, node.name)
    for base in node.bases:
        head = _head(base)
        if head in ("TypedDict", "Struct"):
            api.kind = "typeddict" if head == "TypedDict" else "struct"
        target = base.value if isinstance(base, ast.Subscript) else base
        inherited = class_api(source, module, target.id, depth + 1) if isinstance(target, ast.Name) else None
        if inherited is not None:
            api.kind = inherited.kind if inherited.kind != "class" else api.kind
            api.fields |= inherited.fields
            api.required |= inherited.required
            api.attributes |= inherited.attributes
            api.methods |= inherited.methods
    if any("dataclass" in ast.unparse(d) for d in node.decorator_list):
        api.kind = "dataclass"
    total = not any(k.arg == "total" and ast.unparse(k.value) == "False" for k in node.keywords)
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            if _head(statement.annotation) == "ClassVar":
                api.attributes.add(statement.target.id)
                continue
            api.fields[statement.target.id] = (module, statement.annotation)
            head = _head(statement.annotation)
            if api.kind == "typeddict" and (head == "Required" or (total and head != "NotRequired")):
                api.required.add(statement.target.id)
        elif isinstance(statement, ast.Assign):
            api.attributes.update(_bound_names(statement))
        elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            api.methods[statement.name] = (module, statement)
            api.own_init |= statement.name == "__init__"
            api.attributes.update(_self_attributes(statement))
    return api


def _self_attributes(method: ast.FunctionDef) -> set[str]:
    targets = [t for n in ast.walk(method) if isinstance(n, ast.Assign | ast.AnnAssign)
               for t in (n.targets if isinstance(n, ast.Assign) else [n.target])]  # fmt: skip
    return {t.attr for t in targets if isinstance(t, ast.Attribute) and ast.unparse(t.value) == "self"}


@dataclass
class Parameters:
    """What a call accepts: ``positional`` arguments at most (None: any number), keyword names ->
    (module, annotation), and ``open`` when ``**kwargs`` go somewhere the check cannot follow."""

    positional: int | None
    keywords: dict[str, tuple[str, ast.expr | None]]
    open: bool = False


def parameters(source: PackageSource, module: str, function: ast.FunctionDef, method: bool) -> Parameters:
    """A function's parameters (without ``self`` when ``method``); ``**kwargs`` handed on as
    ``Class(..., **kwargs)`` add the keywords that class's constructor accepts."""
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args][1 if method else 0 :]
    named = [*arguments.args[1 if method and not arguments.posonlyargs else 0 :], *arguments.kwonlyargs]
    result = Parameters(
        None if arguments.vararg else len(positional), {a.arg: (module, a.annotation) for a in named}
    )
    if arguments.kwarg is None:
        return result
    kwargs = arguments.kwarg.arg
    calls = [n for n in ast.walk(function) if isinstance(n, ast.Call)]
    handed = [c for c in calls if any(k.arg is None and ast.unparse(k.value) == kwargs for k in c.keywords)]
    result.open = not handed
    for call in handed:
        target = class_api(source, module, call.func.id) if isinstance(call.func, ast.Name) else None
        if target is None:
            result.open = True
            continue
        accepted = constructor(source, target)
        result.open |= accepted.open
        result.keywords = accepted.keywords | result.keywords
    return result


def constructor(source: PackageSource, api: ClassApi) -> Parameters:
    """What ``Class(...)`` accepts: its ``__init__``, else the fields of a dataclass, msgspec
    struct or TypedDict."""
    if api.kind in ("dataclass", "struct", "typeddict") and not api.own_init:
        return Parameters(0 if api.kind == "typeddict" else len(api.fields), dict(api.fields))
    if "__init__" in api.methods:
        module, init = api.methods["__init__"]
        return parameters(source, module, init, method=True)
    return Parameters(None, {}, open=True)


def literal_values(source: PackageSource, module: str, annotation: ast.expr | None, depth: int = 0):
    """The strings an annotation allows (``Literal[...]``, through aliases, ``| None`` and
    ``Optional``), or None when it is not a closed set of strings."""
    if annotation is None or depth > MAX_DEPTH:
        return None
    if isinstance(annotation, ast.Constant):
        if annotation.value is None:
            return set()
        if isinstance(annotation.value, str):  # a quoted annotation
            return literal_values(source, module, ast.parse(annotation.value, mode="eval").body, depth + 1)
        return None
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        left = literal_values(source, module, annotation.left, depth + 1)
        right = literal_values(source, module, annotation.right, depth + 1)
        return None if left is None or right is None else left | right
    if isinstance(annotation, ast.Subscript):
        head = _head(annotation)
        items = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        if head == "Literal":
            return {
                item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)
            }
        if head in ("Optional", "Annotated"):
            return literal_values(source, module, items[0], depth + 1)
        return None
    if isinstance(annotation, ast.Name):
        found = find_definition(source, module, annotation.id)
        if found and isinstance(found[1], ast.Assign | ast.AnnAssign) and found[1].value is not None:
            return literal_values(source, found[0], found[1].value, depth + 1)
    return None
