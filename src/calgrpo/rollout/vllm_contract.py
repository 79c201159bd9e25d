"""What the vLLM engine uses of vLLM, read from its syntax, checked against vLLM's own source.

Two pure steps (stdlib only; vLLM is never imported):

* :func:`uses_of_engine` reads ``vllm_engine.py`` with ``ast`` and lists every name it relies on:
  names taken from the ``vllm`` module or imported from it; keyword arguments of calls like
  ``vllm.LLM(...)`` (``**f(...)`` is followed into the dict the module's function ``f`` returns);
  attributes and method arguments on names annotated with a vLLM class (``completion:
  CompletionOutput``); keys of dict literals a function returns as a vLLM TypedDict; the finish
  reasons ``VLLM_FINISH_REASONS`` maps.
* :func:`check_contract` looks each one up in a :class:`PackageSource` of the pinned wheel and
  returns the problems: a renamed or removed argument, attribute or key; a string value outside
  the argument's ``Literal`` choices; a finish reason vLLM lacks, or one it has that the engine
  does not handle. ``LLM(**kwargs)`` is followed into the class it forwards them to (``EngineArgs``).
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass
from typing import Literal

from calgrpo.rollout.vllm_source import (
    PackageSource,
    class_api,
    constructor,
    find_definition,
    literal_values,
    parameters,
    runtime_names,
)

FINISH_REASONS_AT = ("vllm.v1.engine", "FINISH_REASON_STRINGS")
"""Where vLLM lists the finish reason strings of ``CompletionOutput.finish_reason``."""
FINISH_REASONS_NAME = "VLLM_FINISH_REASONS"
"""The engine's module-level dict from vLLM's finish reasons to ours."""

UseKind = Literal["export", "argument", "positional", "attribute", "key", "finish_reason", "unreadable"]


@dataclass(frozen=True)
class Use:
    """One thing the engine relies on. ``owner``: ``vllm`` (or a submodule) for exports, else the
    vLLM class by its import path (``vllm.CompletionOutput``); ``method``: the called method
    (``__init__`` for a constructor); ``value``: the string constant passed, if one is."""

    kind: UseKind
    owner: str
    name: str
    line: int
    method: str | None = None
    value: str | None = None

    def describe(self) -> str:
        where = f"{self.owner}.{self.method}()" if self.method else self.owner
        return f"line {self.line}: {self.kind} {self.name!r} of {where}"


def _dict_entries(node: ast.AST) -> dict[str, ast.expr] | None:
    """``{"a": x}`` or ``dict(a=x)`` as {name: value expression}; None for anything else."""
    if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) and isinstance(k.value, str)
                                          for k in node.keys):  # fmt: skip
        return {k.value: v for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if not node.args and all(k.arg is not None for k in node.keywords):
            return {k.arg: k.value for k in node.keywords}
    return None


def _string(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _annotation_classes(node: ast.expr | None, imported: dict[str, str]) -> list[str]:
    """The vLLM classes an annotation names, e.g. ``list[TokensPrompt]`` -> [vllm.TokensPrompt]."""
    if node is None:
        return []
    return [imported[n.id] for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in imported]


def uses_of_engine(source: str) -> list[Use]:
    """Everything the engine module ``source`` uses of vLLM (see the module docstring)."""
    tree = ast.parse(source)
    imported: dict[str, str] = {}  # local name -> vllm.path.Name
    modules: set[str] = set()  # local names bound to the vllm module
    uses: list[Use] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vllm":
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                uses.append(Use("export", node.module, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "vllm"}
    returned = {f.name: entries for f in tree.body if isinstance(f, ast.FunctionDef)
                for r in ast.walk(f) if isinstance(r, ast.Return) and r.value is not None
                if (entries := _dict_entries(r.value)) is not None}  # fmt: skip
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            uses.append(Use("export", "vllm", node.attr, node.lineno))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id in modules:  # fmt: skip
            uses += _call_uses(node, f"vllm.{node.func.attr}", "__init__", returned)
    for function in (f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)):
        uses += _function_uses(function, imported, returned)
    uses += _finish_reason_uses(tree)
    return uses


def _call_uses(call: ast.Call, owner: str, method: str, returned: dict) -> list[Use]:
    uses = [Use("positional", owner, str(len(call.args)), call.lineno, method)]
    for keyword in call.keywords:
        if keyword.arg is not None:
            uses.append(Use("argument", owner, keyword.arg, call.lineno, method, _string(keyword.value)))
            continue
        inner = keyword.value
        name = inner.func.id if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) else None
        if name not in returned:
            uses.append(Use("unreadable", owner, f"**{ast.unparse(inner)}", call.lineno, method))
            continue
        for key, value in returned[name].items():
            uses.append(Use("argument", owner, key, value.lineno, method, _string(value)))
    return uses


def _function_uses(function: ast.FunctionDef, imported: dict[str, str], returned: dict) -> list[Use]:
    typed: dict[str, str] = {}  # local name -> vLLM class
    arguments = [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]
    for argument in arguments:
        classes = _annotation_classes(argument.annotation, imported)
        if len(classes) == 1 and isinstance(argument.annotation, ast.Name):
            typed[argument.arg] = classes[0]
    uses: list[Use] = []
    for node in ast.walk(function):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            classes = _annotation_classes(node.annotation, imported)
            if len(classes) == 1 and isinstance(node.annotation, ast.Name):
                typed[node.target.id] = classes[0]
                if node.value is not None and (entries := _dict_entries(node.value)) is not None:
                    uses += [Use("key", classes[0], key, node.lineno) for key in entries]
    for node in ast.walk(function):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in typed:
            uses.append(Use("attribute", typed[node.value.id], node.attr, node.lineno))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id in typed:  # fmt: skip
            uses += _call_uses(node, typed[node.func.value.id], node.func.attr, returned)
    for owner in _annotation_classes(function.returns, imported):
        for node in (r for r in ast.walk(function) if isinstance(r, ast.Return) and r.value is not None):
            for literal in ast.walk(node.value):
                entries = _dict_entries(literal) if isinstance(literal, ast.Dict) else None
                uses += [Use("key", owner, key, literal.lineno) for key in entries or ()]
    return uses


def _finish_reason_uses(tree: ast.Module) -> list[Use]:
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(
            node, ast.Assign) and len(node.targets) == 1 else None)  # fmt: skip
        if isinstance(target, ast.Name) and target.id == FINISH_REASONS_NAME and node.value is not None:
            entries = _dict_entries(node.value) or {}
            return [Use("finish_reason", "vllm", reason, value.lineno) for reason, value in entries.items()]
    return [Use("unreadable", "vllm", f"{FINISH_REASONS_NAME} (no module-level dict of that name)", 1)]


def check_contract(uses: list[Use], source: PackageSource) -> list[str]:
    """The problems of the engine's ``uses`` against vLLM's ``source`` (empty: all found)."""
    problems = [f"{use.describe()}: {problem}" for use in uses if (problem := _problem(use, source))]
    keys: dict[tuple[str, int], set[str]] = {}
    for use in uses:
        if use.kind == "key":
            keys.setdefault((use.owner, use.line), set()).add(use.name)
    for (owner, line), given in keys.items():
        api = _class(source, owner)
        missing = sorted(api.required - given) if api else []
        if missing:
            problems.append(f"line {line}: a {owner} dict lacks the required keys {missing}")
    reasons = _finish_reasons(source)
    handled = {use.name for use in uses if use.kind == "finish_reason"}
    if reasons is None:
        problems.append(f"vLLM no longer defines {'.'.join(FINISH_REASONS_AT)}: find its finish reasons")
    elif reasons - handled and handled:
        problems.append(
            f"{FINISH_REASONS_NAME} does not map vLLM's finish reasons {sorted(reasons - handled)}"
        )
    return problems


def _class(source: PackageSource, owner: str):
    module, _, name = owner.rpartition(".")
    return class_api(source, module, name)


def _close(name: str, valid) -> str:
    close = difflib.get_close_matches(name, sorted(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _finish_reasons(source: PackageSource) -> set[str] | None:
    found = find_definition(source, *FINISH_REASONS_AT)
    if found is None or not isinstance(found[1], ast.Assign | ast.AnnAssign):
        return None
    value = found[1].value
    items = value.elts if isinstance(value, ast.Tuple | ast.List) else []
    return {_string(item) for item in items if _string(item)}


def _problem(use: Use, source: PackageSource) -> str | None:
    """Why ``use`` does not hold in ``source``, or None when it does."""
    if use.kind == "unreadable":
        return "the check cannot read this; pass names explicitly or through a function returning a dict"
    if use.kind == "export":
        tree = source.module(use.owner)
        if tree is None:
            return f"vLLM has no module {use.owner}"
        names = runtime_names(tree) if use.owner == "vllm" else set()
        if use.owner == "vllm" and use.name not in names:
            return f"vllm does not export it{_close(use.name, names)}"
        return None if find_definition(source, use.owner, use.name) else "vLLM does not define it"
    if use.kind == "finish_reason":
        reasons = _finish_reasons(source)
        return (
            None if reasons is None or use.name in reasons else f"not a vLLM finish reason {sorted(reasons)}"
        )
    api = _class(source, use.owner)
    if api is None:
        return f"vLLM has no class {use.owner}"
    if use.kind == "attribute":
        return (
            None
            if use.name in api.members()
            else f"{api.name} has no such attribute{_close(use.name, api.members())}"
        )
    if use.kind == "key":
        if api.kind != "typeddict":
            return f"{api.name} is not a TypedDict"
        return None if use.name in api.fields else f"{api.name} has no such key{_close(use.name, api.fields)}"
    if use.method == "__init__":
        accepted = constructor(source, api)
    elif use.method in api.methods:
        module, function = api.methods[use.method]
        accepted = parameters(source, module, function, method=True)
    else:
        return f"{api.name} has no method {use.method!r}{_close(use.method or '', api.methods)}"
    return _argument_problem(use, source, accepted)


def _argument_problem(use: Use, source: PackageSource, accepted) -> str | None:
    if use.kind == "positional":
        limit = accepted.positional
        return None if limit is None or int(use.name) <= limit else f"at most {limit} positional arguments"
    if use.name not in accepted.keywords:
        return (
            None if accepted.open else f"vLLM accepts no such argument{_close(use.name, accepted.keywords)}"
        )
    if use.value is not None:
        module, annotation = accepted.keywords[use.name]
        allowed = literal_values(source, module, annotation)
        if allowed is not None and use.value not in allowed:
            return f"{use.value!r} is not one of {sorted(allowed)}"
    return None
