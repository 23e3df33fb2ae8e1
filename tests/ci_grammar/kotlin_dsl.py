"""Read TeamCity's Kotlin DSL (settings.kts) with tree-sitter-kotlin into plain statements, every
string literal decoded exactly as the Kotlin compiler does.

- "..." strings: escapes \\t \\b \\n \\r \\' \\" \\\\ \\$ and \\uXXXX (UTF-16 code units, so a pair of
  \\u escapes makes one astral character); any other backslash is a compile error;
- \"\"\"...\"\"\" raw strings: no escapes at all, a backslash is a backslash;
- templates in both: `${EXPR}` where EXPR is a constant (a character literal such as '$', a string
  literal), evaluated; `$name` (a variable) cannot be resolved in settings and is an error; a `$`
  not followed by an identifier or `{` is a literal dollar;
- `.trimIndent()` as kotlin.text.trimIndent (stdlib Indent.kt): split at \\r\\n, \\n or \\r; the
  smallest indent (leading whitespace by Char.isWhitespace) of the non-blank lines is removed from
  every line, a blank first and last line are dropped, lines are joined with \\n;
- `+` between strings concatenates.

tree-sitter-kotlin finds the literals and `${...}` spans; the characters between are decoded here
(its own token split is not used: it does not mark \\uXXXX or `$name` as such). Anything else in a
value position (a function call other than trimIndent, arithmetic) is an error, as are tree-sitter
ERROR or MISSING nodes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

ESCAPES = {"t": "\t", "b": "\b", "n": "\n", "r": "\r", "'": "'", '"': '"', "\\": "\\", "$": "$"}
JAVA_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"


class KotlinReadError(AssertionError):
    """The file uses something this reader does not evaluate, or is not valid Kotlin."""


@dataclass(frozen=True)
class KString:
    value: str


@dataclass(frozen=True)
class KRef:
    """A name or a dotted path (an object, an enum constant): `Build`, `FailureAction.IGNORE`."""

    name: str


@dataclass(frozen=True)
class KNumber:
    value: int | float


@dataclass
class KCall:
    name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    body: list[Any] | None = None
    """The statements of a trailing lambda, if there is one."""
    line: int = 0


@dataclass
class KAssign:
    target: str
    value: Any
    line: int = 0


@dataclass
class KObject:
    name: str
    supertype: str
    body: list[Any]
    line: int = 0


@dataclass
class KImport:
    path: str


Value = KString | KRef | KNumber | KCall
Statement = KCall | KAssign | KObject | KImport


# ----------------------------------------------------------------------------- strings


def is_whitespace(ch: str) -> bool:
    """Kotlin/JVM Char.isWhitespace: Character.isWhitespace or Character.isSpaceChar."""
    return ch in JAVA_WHITESPACE or unicodedata.category(ch) in ("Zs", "Zl", "Zp")


def is_blank(line: str) -> bool:
    return all(is_whitespace(c) for c in line)


def trim_indent(text: str) -> str:
    """kotlin.text.trimIndent, as in the stdlib's Indent.kt (replaceIndent("") and reindent)."""
    lines = re.split(r"\r\n|\n|\r", text)

    def width(line: str) -> int:
        return next((i for i, c in enumerate(line) if not is_whitespace(c)), len(line))

    indent = min((width(line) for line in lines if not is_blank(line)), default=0)
    last = len(lines) - 1
    kept = [line[indent:] for i, line in enumerate(lines) if not (i in (0, last) and is_blank(line))]
    return "\n".join(kept)


def decode_segment(raw: str, *, raw_string: bool) -> str:
    """Characters between templates: escapes (not in raw strings) and literal dollars."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and not raw_string:
            nxt = raw[i + 1 : i + 2]
            if nxt in ESCAPES and nxt:
                out.append(ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", raw[i + 2 : i + 6]):
                out.append(chr(int(raw[i + 2 : i + 6], 16)))
                i += 6
                continue
            raise KotlinReadError(f"illegal escape {raw[i : i + 6]!r} in a Kotlin string")
        if c == "$" and i + 1 < len(raw) and (raw[i + 1].isalpha() or raw[i + 1] in "_`"):
            raise KotlinReadError(f"string template {raw[i : i + 12]!r} refers to a variable")
        if c in "\r\n" and not raw_string:
            raise KotlinReadError("a line break inside a single-line Kotlin string")
        out.append(c)
        i += 1
    return _join_surrogates("".join(out))


def _join_surrogates(text: str) -> str:
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def decode_char_literal(text: str) -> str:
    """'$' -> $, '\\'' -> ', '\\u0041' -> A."""
    if len(text) < 3 or text[0] != "'" or text[-1] != "'":
        raise KotlinReadError(f"not a character literal: {text!r}")
    inner = text[1:-1]
    value = decode_segment(inner, raw_string=False) if inner.startswith("\\") else inner
    if len(value.encode("utf-16-le", "surrogatepass")) != 2:
        raise KotlinReadError(f"a character literal holds one UTF-16 unit: {text!r}")
    return value


# ----------------------------------------------------------------------------- the tree


class Reader:
    def __init__(self, source: bytes) -> None:
        try:
            import tree_sitter
            import tree_sitter_kotlin
        except ImportError as e:  # pragma: no cover - the tests skip with need() first
            raise KotlinReadError("tree-sitter and tree-sitter-kotlin are not installed") from e
        self.source = source
        parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_kotlin.language()))
        self.tree = parser.parse(source)

    def text(self, node: Any) -> str:
        return self.source[node.start_byte : node.end_byte].decode("utf-8")

    def fail(self, node: Any, message: str) -> KotlinReadError:
        return KotlinReadError(f"line {node.start_point[0] + 1}: {message}: {self.text(node)[:80]!r}")

    def syntax_errors(self) -> list[str]:
        errors = []
        stack = [self.tree.root_node]
        while stack:
            node = stack.pop()
            if node.type == "ERROR" or node.is_missing:
                errors.append(f"{node.type} at line {node.start_point[0] + 1}")
            stack.extend(node.children)
        return errors

    def statements(self) -> list[Statement]:
        errors = self.syntax_errors()
        if errors:
            raise KotlinReadError(f"not valid Kotlin: {errors}")
        return self._block(self.tree.root_node.children, top=True)

    # ----------------------------------------------------------------------------- statements
    def _block(self, nodes: list[Any], top: bool = False) -> list[Statement]:
        out: list[Statement] = []
        for node in nodes:
            kind = node.type
            if kind in ("line_comment", "multiline_comment", "block_comment", "{", "}", ";", "shebang_line"):
                continue
            if kind == "import" and top:
                out.append(KImport(self.text(node).removeprefix("import").strip()))
            elif kind == "package_header" and top:
                continue
            elif kind == "call_expression":
                out.append(self._call(node))
            elif kind == "assignment":
                out.append(self._assign(node))
            elif kind == "object_declaration":
                out.append(self._object(node))
            elif kind == "statements":
                out += self._block(node.children, top)
            else:
                raise self.fail(node, f"unexpected {kind}")
        return out

    def _assign(self, node: Any) -> KAssign:
        named = [c for c in node.children if c.is_named]
        if len(named) != 2 or self.text(node.children[1]) != "=":
            raise self.fail(node, "not a plain assignment")
        return KAssign(self.text(named[0]), self.value(named[1]), node.start_point[0] + 1)

    def _object(self, node: Any) -> KObject:
        name = next(c for c in node.children if c.type in ("identifier", "type_identifier"))
        specs = next((c for c in node.children if c.type == "delegation_specifiers"), None)
        if specs is None:
            raise self.fail(node, "object without a supertype")
        invocation = _descendant(specs, "constructor_invocation")
        if invocation is None:
            raise self.fail(node, "object whose supertype is not a constructor call")
        supertype = self.text(invocation.children[0])
        call = self._call_parts(invocation)
        if len(call.args) != 1 or not isinstance(call.args[0], list):
            raise self.fail(node, "object whose constructor does not take one lambda")
        return KObject(self.text(name), supertype, call.args[0], node.start_point[0] + 1)

    def _call(self, node: Any) -> KCall:
        call = self._call_parts(node)
        call.line = node.start_point[0] + 1
        return call

    def _call_parts(self, node: Any) -> KCall:
        children = [c for c in node.children if c.is_named]
        if node.type == "call_expression" and children and children[0].type == "call_expression":
            inner = self._call_parts(children[0])
            rest = children[1:]
        else:
            head = children[0]
            if head.type not in ("identifier", "user_type", "navigation_expression", "simple_identifier"):
                raise self.fail(node, f"a call of {head.type}")
            inner = KCall(self.text(head))
            rest = children[1:]
        for child in rest:
            if child.type == "value_arguments":
                for arg in child.children:
                    if arg.type != "value_argument":
                        continue
                    self._argument(arg, inner)
            elif child.type == "annotated_lambda":
                lam = _descendant(child, "lambda_literal")
                if inner.body is not None:
                    raise self.fail(node, "two trailing lambdas")
                inner.body = self._block(lam.children)
            else:
                raise self.fail(child, f"unexpected {child.type} in a call")
        return inner

    def _argument(self, arg: Any, call: KCall) -> None:
        named = [c for c in arg.children if c.is_named]
        has_name = any(self.text(c) == "=" for c in arg.children)
        if has_name:
            call.kwargs[self.text(named[0])] = self.value(named[-1])
        elif named[0].type == "lambda_literal":
            call.args.append(self._block(named[0].children))
        else:
            call.args.append(self.value(named[0]))

    # ----------------------------------------------------------------------------- values
    def value(self, node: Any) -> Any:
        kind = node.type
        if kind == "string_literal":
            return KString(self.string(node, raw_string=False))
        if kind == "multiline_string_literal":
            return KString(self.string(node, raw_string=True))
        if kind in ("number_literal", "integer_literal"):
            return KNumber(int(self.text(node).replace("_", "")))
        if kind in ("identifier", "navigation_expression", "simple_identifier", "boolean_literal"):
            if kind == "navigation_expression":
                receiver = node.children[0]
                if receiver.type in ("string_literal", "multiline_string_literal"):
                    raise self.fail(node, "a string property (only .trimIndent() is evaluated)")
            return KRef(self.text(node))
        if kind == "parenthesized_expression":
            return self.value(next(c for c in node.children if c.is_named))
        if kind in ("binary_expression", "additive_expression"):
            left, op, right = node.children
            if self.text(op) != "+":
                raise self.fail(node, "arithmetic")
            a, b = self.value(left), self.value(right)
            if not (isinstance(a, KString) and isinstance(b, KString)):
                raise self.fail(node, "+ between non-strings")
            return KString(a.value + b.value)
        if kind == "call_expression":
            head = node.children[0]
            if head.type == "navigation_expression" and self.text(head.children[-1]) in ("trimIndent", "trimMargin"):
                receiver = self.value(head.children[0])
                args = [c for c in node.children[1].children if c.type == "value_argument"]
                if not isinstance(receiver, KString) or args:
                    raise self.fail(node, "trimIndent() on a non-string, or trimMargin with arguments")
                if self.text(head.children[-1]) == "trimMargin":
                    raise self.fail(node, "trimMargin is not evaluated")
                return KString(trim_indent(receiver.value))
            return self._call(node)
        raise self.fail(node, f"a {kind} where a constant was expected")

    def string(self, node: Any, *, raw_string: bool) -> str:
        quote = 3 if raw_string else 1
        start, end = node.start_byte + quote, node.end_byte - quote
        if self.source[node.start_byte : start] != b'"' * quote or self.source[end : node.end_byte] != b'"' * quote:
            raise self.fail(node, "unexpected string delimiters")
        out: list[str] = []
        cursor = start
        for child in node.children:
            if child.type != "interpolation":
                continue
            out.append(decode_segment(self.source[cursor : child.start_byte].decode("utf-8"), raw_string=raw_string))
            out.append(self._template(child))
            cursor = child.end_byte
        out.append(decode_segment(self.source[cursor:end].decode("utf-8"), raw_string=raw_string))
        return "".join(out)

    def _template(self, node: Any) -> str:
        text = self.text(node)
        if not text.startswith("${") or not text.endswith("}"):
            raise self.fail(node, "a $name template (a variable)")
        inner = [c for c in node.children if c.is_named]
        if len(inner) != 1:
            raise self.fail(node, "an empty or compound template")
        expr = inner[0]
        if expr.type == "character_literal":
            return decode_char_literal(self.text(expr))
        value = self.value(expr)
        if not isinstance(value, KString):
            raise self.fail(node, "a template that is not a constant string or character")
        return value.value


def _descendant(node: Any, kind: str) -> Any:
    stack = list(node.children)
    while stack:
        child = stack.pop(0)
        if child.type == kind:
            return child
        stack.extend(child.children)
    return None


def read(source: bytes) -> list[Statement]:
    return Reader(source).statements()


def string_literal_expressions(source: bytes) -> list[tuple[str, str]]:
    """Every string-valued expression of the file as (Kotlin source, decoded value): the literals
    and the `"...".trimIndent()` calls, outermost only. For checking this reader against kotlinc."""
    reader = Reader(source)
    found: list[tuple[str, str]] = []
    stack = [reader.tree.root_node]
    while stack:
        node = stack.pop(0)
        head = node.children[0] if node.children else None
        if (
            node.type == "call_expression"
            and head is not None
            and head.type == "navigation_expression"
            and reader.text(head.children[-1]) == "trimIndent"
        ):
            found.append((reader.text(node), reader.value(node).value))
            continue
        if node.type in ("string_literal", "multiline_string_literal"):
            found.append((reader.text(node), reader.value(node).value))
            continue
        stack.extend(node.children)
    return found
