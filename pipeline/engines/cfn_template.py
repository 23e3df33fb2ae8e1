"""Reading CloudFormation templates: YAML with the short-form intrinsics (`!Ref X`), or JSON.

One parser for both engines: the local engine reads the topology from it, the aws engine
validates and edits parameters with it.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import TemplateError


class _CfnLoader(yaml.SafeLoader):
    """A SafeLoader (no arbitrary objects) that reads `!Ref X` as `{"Ref": X}`, `!Sub` as `{"Fn::Sub": ...}`."""


def _short_form(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _short_form)
# CloudFormation reads 2010-09-09 as a string; so must we (a re-parse comparison would see a date).
_CfnLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


_FastCfnLoader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = _CfnLoader
if getattr(yaml, "__with_libyaml__", False):

    class _CCfnLoader(yaml.CSafeLoader):
        """The same constructors and resolvers over libyaml's parser: several times faster."""

    _CCfnLoader.add_multi_constructor("!", _short_form)
    _CCfnLoader.yaml_implicit_resolvers = _CfnLoader.yaml_implicit_resolvers
    _FastCfnLoader = _CCfnLoader


_parsed: dict[tuple[str, str], dict[str, Any]] = {}
"""{(source, text): parsed template}: `pipeline validate` checks one template once per stage that
deploys it, and a deploy reads it several times; each gets its own copy (callers may edit it)."""


def load_template(path: Path) -> dict[str, Any]:
    """Read and parse a template file; TemplateError (bad input) naming the file otherwise."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TemplateError(f"template {path} does not exist", hint="check the environment's `template`") from None
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc.strerror}") from None
    key = (str(path), text)
    if key not in _parsed:
        if len(_parsed) >= 16:
            _parsed.clear()
        _parsed[key] = parse_template(text, source=str(path))
    return copy.deepcopy(_parsed[key])


def parse_template(text: str, *, source: str = "<template>") -> dict[str, Any]:
    """The template as data; TemplateError at file:line:column when it is not readable."""
    data = _read_yaml(text, source)
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise TemplateError(
            f"{source} has no Resources section", hint="a CloudFormation template is a mapping with Resources"
        )
    return data


def _read_yaml(text: str, source: str) -> Any:
    with contextlib.suppress(yaml.YAMLError):
        return yaml.load(text, Loader=_FastCfnLoader)
    try:  # not readable: again with the pure-Python parser, whose messages say more
        return yaml.load(text, Loader=_CfnLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        # file:line:column, the form editors and terminals make clickable
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TemplateError(
            f"{where}: not valid YAML: {problem}", hint="fix the syntax, then run `cfn-lint` on it"
        ) from None
