"""The stack's CloudFormation template: read, size-checked, linted (cfn-lint), validated by
CloudFormation, and the parameters a deploy sends (template defaults < given < the image), checked
against the template's declarations before anything changes (TemplateError, exit 2)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.engines.aws.session import AwsSession, botocore_exceptions
from pipeline.engines.cfn_template import parse_template
from pipeline.engines.stack import OnEvent
from pipeline.engines.topology import ALB, TARGET_GROUP, is_canary_slot
from pipeline.errors import TemplateError, ToolMissingError
from pipeline.model import IMAGE_PARAMETER

TEMPLATE_BODY_MAX = 51_200
"""CloudFormation's limit for TemplateBody (bytes); larger templates need S3 (TemplateURL)."""

_AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")
_VALIDATED: dict[tuple[str, str, str], tuple[str, ...]] = {}
"""(endpoint, region, template text) -> capabilities, for templates `validate_template` accepted."""


def _ignore(text: str) -> None:
    pass


def lint_template(text: str, *, source: str = "template", region: str = "us-east-1") -> list[str]:
    """Run cfn-lint on the template text. Errors raise TemplateError; warnings are returned.

    Results are cached per (text, source, region) for the life of the process: linting is pure."""
    return list(_lint(text, source, region))


@functools.lru_cache(maxsize=32)
def _lint(text: str, source: str, region: str) -> tuple[str, ...]:
    try:
        from cfnlint.api import lint
    except ImportError as exc:  # pragma: no cover - the [run] extra installs it
        raise ToolMissingError(
            "cfn-lint is not installed (templates are linted before any change)",
            hint="pip install 'pipeline-as-code[run]' (or pip install cfn-lint)",
        ) from exc
    errors: list[str] = []
    warnings: list[str] = []
    for match in lint(text, regions=[region]):
        severity = str(getattr(match.rule, "severity", "error")).lower()
        line = f"{source}:{match.linenumber}: {match.rule.id} {match.message}"
        if severity == "error":
            errors.append(line)
        elif severity == "warning":
            warnings.append(line)
    if errors:
        shown = "\n".join(f"  - {e}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise TemplateError(
            f"{source} has {len(errors)} cfn-lint error{'s' if len(errors) != 1 else ''}:\n{shown}{more}",
            hint=f"fix them and check with `cfn-lint {source}`; nothing was changed",
        )
    return tuple(warnings)


def template_parameters(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    params = doc.get("Parameters") or {}
    if not isinstance(params, dict):
        raise TemplateError("the template's Parameters section is not a mapping")
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in params.items()}


def _as_parameter_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def merge_parameters(
    doc: Mapping[str, Any],
    image: str,
    parameters: Mapping[str, str] | None,
    *,
    image_parameter: str = IMAGE_PARAMETER,
    source: str = "template",
) -> dict[str, str]:
    """Template defaults < `parameters` < the image, checked against the template's declarations."""
    declared = template_parameters(doc)
    if image_parameter not in declared:
        raise TemplateError(
            f"{source} has no parameter {image_parameter!r} to carry the image",
            hint=f"declare Parameters: {image_parameter}: {{Type: AWS::EC2::Image::Id}} and use it in the "
            "launch template, or set Environment(image_parameter=...)",
        )
    given = dict(parameters or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise TemplateError(
            f"{source} declares no parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}",
            hint=f"the template's parameters are: {', '.join(sorted(declared))}",
        )
    merged: dict[str, str] = {}
    for name, decl in declared.items():
        if "Default" in decl:
            merged[name] = _as_parameter_value(decl["Default"])
    merged.update({k: str(v) for k, v in given.items()})
    merged[image_parameter] = image
    problems = [p for name, decl in declared.items() for p in _check_parameter(name, decl, merged.get(name))]
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems)
        raise TemplateError(
            f"parameters for {source} are invalid:\n{shown}", hint="fix the values; nothing was changed"
        )
    return merged


def _check_parameter(name: str, decl: Mapping[str, Any], value: str | None) -> list[str]:
    if value is None:
        return [f"{name}: required (the template gives it no Default)"]
    kind = str(decl.get("Type", "String"))
    out: list[str] = []
    allowed = decl.get("AllowedValues")
    if isinstance(allowed, list) and value not in [_as_parameter_value(a) for a in allowed]:
        out.append(f"{name}: {value!r} is not one of {', '.join(_as_parameter_value(a) for a in allowed)}")
    pattern = decl.get("AllowedPattern")
    if isinstance(pattern, str) and kind == "String":
        try:
            if not re.fullmatch(pattern, value):
                out.append(f"{name}: {value!r} does not match AllowedPattern {pattern}")
        except re.error:
            pass
    if kind == "String":
        if "MinLength" in decl and len(value) < int(decl["MinLength"]):
            out.append(f"{name}: shorter than MinLength {decl['MinLength']}")
        if "MaxLength" in decl and len(value) > int(decl["MaxLength"]):
            out.append(f"{name}: longer than MaxLength {decl['MaxLength']}")
    if kind == "Number":
        try:
            number = float(value)
        except ValueError:
            return [*out, f"{name}: {value!r} is not a number"]
        if "MinValue" in decl and number < float(decl["MinValue"]):
            out.append(f"{name}: {value} is below MinValue {decl['MinValue']}")
        if "MaxValue" in decl and number > float(decl["MaxValue"]):
            out.append(f"{name}: {value} is above MaxValue {decl['MaxValue']}")
    if kind == "AWS::EC2::Image::Id" and not _AMI.match(value):
        hint = " (pass the AMI id alone, not Packer's region:ami artifact id)" if ":" in value else ""
        out.append(f"{name}: {value!r} is not an AMI id like ami-0123456789abcdef0{hint}")
    return out


class StackTemplate:
    """The template file an engine deploys, and the image parameter in it."""

    def __init__(self, path: Path, image_parameter: str = IMAGE_PARAMETER) -> None:
        self.path = path
        self.image_parameter = image_parameter

    @property
    def source(self) -> str:
        return str(self.path)

    def text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(
                f"cannot read template {self.path}: {exc.strerror or exc}",
                hint="check Environment(template=...) (relative to the definition file)",
            ) from None

    def doc(self) -> dict[str, Any]:
        return parse_template(self.text(), source=self.source)

    def parameters(self) -> dict[str, dict[str, Any]]:
        return template_parameters(self.doc())

    def _sized(self) -> str:
        text = self.text()
        if len(text.encode("utf-8")) > TEMPLATE_BODY_MAX:
            raise TemplateError(
                f"{self.path} is larger than CloudFormation's {TEMPLATE_BODY_MAX} byte TemplateBody limit",
                hint="shorten it (or split it into nested stacks)",
            )
        return text

    def check(self, region: str) -> None:
        """Readable, within CloudFormation's size limit, declares the image parameter, and cfn-lint
        finds no error in it. Offline: no AWS call."""
        text = self._sized()
        doc = parse_template(text, source=self.source)
        if self.image_parameter not in template_parameters(doc):
            raise TemplateError(
                f"{self.path} has no parameter {self.image_parameter!r} to carry the image",
                hint=f"declare Parameters: {self.image_parameter}: {{Type: AWS::EC2::Image::Id}} and use it in the "
                "launch template, or set Environment(image_parameter=...)",
            )
        lint_template(text, source=self.source, region=region)

    def plan(self, image: str, parameters: Mapping[str, str] | None = None) -> dict[str, str]:
        """The parameters a deploy of `image` sends, checked locally (no AWS call)."""
        doc = parse_template(self._sized(), source=self.source)
        return merge_parameters(doc, image, parameters, image_parameter=self.image_parameter, source=self.source)

    def validate(self, session: AwsSession, *, on_event: OnEvent = _ignore) -> list[str]:
        """cfn-lint, then CloudFormation's `validate_template`; returns the capabilities it needs.

        Done once per template text, endpoint and region in a process."""
        text = self.text()
        key = (session.endpoint("cloudformation") or "", session.region, text)
        if key in _VALIDATED:
            return list(_VALIDATED[key])
        for warning in lint_template(text, source=self.source, region=session.region):
            on_event(f"cfn-lint warning: {warning}")
        ClientError = botocore_exceptions().ClientError
        try:
            answer = session.call("cloudformation", "validate_template", TemplateBody=text)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") not in {"ValidationError", "ValidationException"}:
                raise
            raise TemplateError(
                f"CloudFormation rejects {self.path}: {error.get('Message', exc)}",
                hint="fix the template; nothing was changed",
            ) from None
        capabilities = [str(c) for c in answer.get("Capabilities", [])]
        _VALIDATED[key] = tuple(capabilities)
        return capabilities

    def slot_logical_ids(self, doc: Mapping[str, Any] | None = None) -> tuple[str | None, str | None, str | None]:
        """(web group's target group, canary slot's target group, load balancer) logical ids."""
        resources = (self.doc() if doc is None else doc).get("Resources") or {}
        primary = canary = balancer = None
        for name, res in resources.items():
            kind = res.get("Type") if isinstance(res, dict) else None
            if kind == TARGET_GROUP:
                if is_canary_slot(res):
                    canary = canary or str(name)
                else:
                    primary = primary or str(name)
            elif kind == ALB:
                balancer = balancer or str(name)
        return primary, canary, balancer


__all__ = ["TEMPLATE_BODY_MAX", "StackTemplate", "lint_template", "merge_parameters", "template_parameters"]
