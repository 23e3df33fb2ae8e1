"""The simple commands of a POSIX sh script, as the shell splits them (no expansion is performed).

Enough of the sh grammar for CI step scripts: single and double quotes, backslashes, `#` comments
at the start of a word, the operators `&&`, `||`, `;`, `&`, `|`, `(`, `)` and newlines between
commands, reserved words that open or close compound commands (`{ }`, `if/then/fi`, `while/do/done`,
`!`); `$(...)` and backquotes are kept inside their word. Here-documents are not supported.
Compound commands are flattened into their simple commands: right for finding what runs, only an
approximation for the exit status of a `{ ...; }` group after `||` (teamcity_model's use).

`expand` performs parameter expansion of `$NAME` and `${NAME}` (bare or in double quotes) and quote
removal on a word as written; any other expansion is refused (ShellSyntaxError), never guessed.
`exported_environment` applies the `export`, `unset` and assignment commands of a script to the
environment its later commands receive.
"""

from __future__ import annotations

from dataclasses import dataclass

OPERATORS = ("&&", "||", ";;", ";", "&", "|", "(", ")", "\n")
LEADING_RESERVED = frozenset({"{", "!", "if", "then", "else", "elif", "do", "while", "until"})
CLOSING_RESERVED = frozenset({"}", "fi", "done", "esac"})


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    raw: tuple[str, ...]
    """The words as written (quotes kept), e.g. to tell `$X` from `'$X'`."""
    before: str
    """The operator before it ('' for the first command)."""
    after: str
    """The operator after it ('' for the last)."""


class ShellSyntaxError(ValueError):
    pass


def commands(script: str) -> list[Command]:
    out: list[Command] = []
    words: list[str] = []
    raw: list[str] = []
    before = ""
    for kind, text, source in _tokens(script):
        if kind == "word":
            words.append(text)
            raw.append(source)
            continue
        words, raw = _strip_reserved(words, raw)
        if words:
            out.append(Command(tuple(words), tuple(raw), before, text))
            words, raw = [], []
            before = text
        elif before in ("", "\n"):
            before = text
    words, raw = _strip_reserved(words, raw)
    if words:
        out.append(Command(tuple(words), tuple(raw), before, ""))
    return out


def _strip_reserved(words: list[str], raw: list[str]) -> tuple[list[str], list[str]]:
    """`{ a; }`, `if a; then b; fi`, `! a`: the simple commands are a and b (reserved words are
    recognised where sh recognises them, as the first word of a command, unquoted)."""
    while words and raw[0] in LEADING_RESERVED:
        words, raw = words[1:], raw[1:]
    if len(words) == 1 and raw[0] in CLOSING_RESERVED:
        return [], []
    return words, raw


def _tokens(script: str) -> list[tuple[str, str, str]]:
    tokens: list[tuple[str, str, str]] = []
    i = 0
    n = len(script)
    while i < n:
        c = script[i]
        if c in " \t\r":
            i += 1
            continue
        if c == "\\" and i + 1 < n and script[i + 1] == "\n":
            i += 2
            continue
        if c == "#":
            while i < n and script[i] != "\n":
                i += 1
            continue
        op = next((o for o in OPERATORS if script.startswith(o, i)), None)
        if op is not None:
            tokens.append(("op", op, op))
            i += len(op)
            continue
        word, i, source = _word(script, i)
        tokens.append(("word", word, source))
    return tokens


def _word(script: str, i: int) -> tuple[str, int, str]:
    start = i
    n = len(script)
    out = []
    while i < n:
        c = script[i]
        if c in " \t\r\n;&|()":
            break
        if c == "\\":
            if i + 1 < n and script[i + 1] == "\n":
                i += 2
                continue
            if i + 1 < n:
                out.append(script[i + 1])
            i += 2
            continue
        if c == "'":
            end = script.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError(f"unterminated single quote at {i}")
            out.append(script[i + 1 : end])
            i = end + 1
            continue
        if c == '"':
            i += 1
            while True:
                if i >= n:
                    raise ShellSyntaxError("unterminated double quote")
                d = script[i]
                if d == '"':
                    i += 1
                    break
                if d == "\\" and i + 1 < n and script[i + 1] in '$`"\\\n':
                    if script[i + 1] != "\n":
                        out.append(script[i + 1])
                    i += 2
                    continue
                if d == "$" and script.startswith("$(", i):
                    end = _matching(script, i + 1)
                    out.append(script[i : end + 1])
                    i = end + 1
                    continue
                out.append(d)
                i += 1
            continue
        if c == "$" and script.startswith("$(", i):
            end = _matching(script, i + 1)
            out.append(script[i : end + 1])
            i = end + 1
            continue
        if c == "`":
            end = script.find("`", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated backquote")
            out.append(script[i : end + 1])
            i = end + 1
            continue
        out.append(c)
        i += 1
    return "".join(out), i, script[start:i]


def _matching(script: str, open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(script)):
        if script[j] == "(":
            depth += 1
        elif script[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    raise ShellSyntaxError("unterminated $(")


def is_pipeline_command(command: Command, *words: str) -> bool:
    """`pipeline WORDS...` (the tool, by any path, e.g. .venv/bin/pipeline)."""
    argv = command.argv
    return bool(argv) and argv[0].rsplit("/", 1)[-1] == "pipeline" and argv[1 : 1 + len(words)] == words


def expand(raw: str, variables: dict[str, str]) -> str:
    """A word as sh passes it to a command: `$NAME` / `${NAME}` expanded (unset: empty), quotes removed."""
    out: list[str] = []
    i, n = 0, len(raw)
    quoted = False
    while i < n:
        c = raw[i]
        if c == "'" and not quoted:
            end = raw.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError(f"unterminated single quote in {raw!r}")
            out.append(raw[i + 1 : end])
            i = end + 1
        elif c == '"':
            quoted = not quoted
            i += 1
        elif c == "\\" and i + 1 < n:
            if quoted and raw[i + 1] not in '$`"\\\n':
                out.append(c)
            out.append(raw[i + 1])
            i += 2
        elif c == "$":
            name, i = _parameter(raw, i)
            out.append(variables.get(name, ""))
        elif c == "`":
            raise ShellSyntaxError(f"command substitution is not modelled: {raw!r}")
        else:
            out.append(c)
            i += 1
    if quoted:
        raise ShellSyntaxError(f"unterminated double quote in {raw!r}")
    return "".join(out)


def _parameter(raw: str, i: int) -> tuple[str, int]:
    """The name of the parameter expanded at raw[i] == '$', and the index after it."""
    if raw.startswith("${", i):
        end = raw.find("}", i)
        name = raw[i + 2 : end] if end > 0 else ""
        if not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise ShellSyntaxError(f"parameter expansion {raw[i : end + 1]!r} is not modelled")
        return name, end + 1
    j = i + 1
    while j < len(raw) and (raw[j].isalnum() or raw[j] == "_"):
        j += 1
    if j == i + 1 or raw[i + 1].isdigit():
        raise ShellSyntaxError(f"expansion at {raw[i : i + 2]!r} in {raw!r} is not modelled")
    return raw[i + 1 : j], j


def exported_environment(before: list[Command], environment: dict[str, str]) -> dict[str, str]:
    """The environment a command receives after these commands of the same script ran: `export
    NAME=VALUE`, `export NAME`, `unset NAME`, and `NAME=VALUE` (which changes an exported variable)."""
    env = dict(environment)
    shell: dict[str, str] = {}
    for command in before:
        words = list(command.raw)
        if words[0] == "export":
            for word in words[1:]:
                name, eq, value = word.partition("=")
                if eq:
                    env[name] = shell[name] = expand(value, {**env, **shell})
                elif name in shell:
                    env[name] = shell[name]
        elif words[0] == "unset":
            for name in words[1:]:
                env.pop(name, None)
                shell.pop(name, None)
        elif all("=" in w and w.split("=", 1)[0].isidentifier() for w in words):
            for word in words:
                name, _, value = word.partition("=")
                shell[name] = expand(value, {**env, **shell})
                if name in env:
                    env[name] = shell[name]
    return env
