"""Which names of an untrusted program the trusted tests may see.

MBPP-style tests are a block of asserts that call the solution by name, next to builtins and the
names their own setup code defines. If every public name of the program were put into the tests'
namespace, a program defining ``set``, ``sorted``, ``abs`` or a setup helper would decide both sides
of ``assert f(x) == set(...)``. So only the names the tests *need from outside* come from the
program: free names of the test code that neither the tests bind, nor the setup defined, nor
builtins provide. Everything else the program defines is ignored.
"""

from __future__ import annotations

import ast
import builtins


def bound_names(tree: ast.AST) -> set[str]:
    """Names the test code binds itself (assignments, defs, imports, loop and comprehension targets)."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            args = node.args if not isinstance(node, ast.ClassDef) else None
            if args is not None:
                every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
                every += [a for a in (args.vararg, args.kwarg) if a is not None]
                bound.update(a.arg for a in every)
        elif isinstance(node, ast.Lambda):
            bound.update(a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs])
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
    return bound


def required_names(tests: str, trusted: dict) -> list[str]:
    """Free names of ``tests`` not provided by ``trusted`` (the namespace after setup) or builtins.

    Sorted, so the order of calls into the jail does not depend on set iteration. Raises
    SyntaxError for test code that does not parse (ingest refuses such problems).
    """
    tree = ast.parse(tests)
    names = [node for node in ast.walk(tree) if isinstance(node, ast.Name)]
    used = {node.id for node in names if isinstance(node.ctx, ast.Load)}
    provided = bound_names(tree) | set(trusted) | set(dir(builtins))
    return sorted(used - provided)
