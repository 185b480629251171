"""Redis vector-set FILTER expressions, evaluated in Python on a lexical hit's attributes, so that one
filter means the same on both sides of a hybrid search.

The grammar is Redis's: selectors `.field`, numbers, strings in single or double quotes,
`true`/`false`, arrays `[1, 2]`, arithmetic `+ - * / % **`, comparisons `== != > >= < <=`,
`in` (a value in an array, or a substring in a string), `and`/`&&`, `or`/`||`, `not`/`!` and
parentheses. As in Redis, a document without an attribute the expression reads does not match.
The expression is translated to a Python expression and checked node by node against that
grammar before it is compiled: nothing else (calls, names, attributes) can run.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from functools import lru_cache

from pipelines.serving.search import FilterError

TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
  | (?P<selector>\.[A-Za-z_][A-Za-z0-9_]*)
  | (?P<word>[A-Za-z_]+)
  | (?P<op>\*\*|==|!=|>=|<=|&&|\|\||[-+*/%<>!()\[\],])
""", re.VERBOSE)
WORDS = {"and": "and", "or": "or", "not": "not", "in": "in", "true": "True", "false": "False"}
SYMBOLS = {"&&": " and ", "||": " or ", "!": " not "}
ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp,
           ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Mod, ast.Pow, ast.Compare, ast.Eq, ast.NotEq, ast.Gt, ast.GtE,
           ast.Lt, ast.LtE, ast.In, ast.Constant, ast.List, ast.Subscript, ast.Name, ast.Load)


class MissingAttribute(Exception):
    """The document has no such attribute: the expression is false for it."""


@lru_cache(maxsize=256)
def compile_filter(expression: str) -> Callable[[dict], bool]:
    """A predicate over a document's attributes (compiled once per expression: a service sees the
    same few again and again). Raises FilterError naming what it could not read."""
    python = _translate(expression)
    try:
        tree = ast.parse(python, mode="eval")
    except SyntaxError:
        raise FilterError(f"the filter expression is not valid: {expression!r}") from None
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED) or (isinstance(node, ast.Name) and node.id != "_a"):
            raise FilterError(f"the filter expression is not valid: {expression!r}")
        if isinstance(node, ast.Subscript) and not (isinstance(node.value, ast.Name) and node.value.id == "_a"):
            raise FilterError(f"the filter expression is not valid: {expression!r}")
    code = compile(tree, "<filter>", "eval")

    def matches(attrs: dict) -> bool:
        try:
            return bool(eval(code, {"__builtins__": {}}, {"_a": _Attributes(attrs)}))  # noqa: S307 - checked above
        except (MissingAttribute, TypeError, ZeroDivisionError, OverflowError):
            return False

    return matches


class _Attributes:
    def __init__(self, attrs: dict):
        self.attrs = attrs

    def __getitem__(self, name: str):
        value = self.attrs.get(name)
        if value is None:
            raise MissingAttribute(name)
        return value


def _translate(expression: str) -> str:
    out, pos = [], 0
    while pos < len(expression):
        m = TOKEN.match(expression, pos)
        if m is None:
            raise FilterError(f"the filter expression is not valid at {expression[pos:pos + 20]!r}")
        kind, text = m.lastgroup, m.group()
        pos = m.end()
        if kind == "selector":
            out.append(f"_a[{text[1:]!r}]")
        elif kind == "word":
            if text not in WORDS:
                raise FilterError(f"the filter expression is not valid: unknown word {text!r}")
            out.append(f" {WORDS[text]} ")
        elif kind == "op":
            out.append(SYMBOLS.get(text, text))
        elif kind != "space":
            out.append(text)
    return "".join(out).strip()
