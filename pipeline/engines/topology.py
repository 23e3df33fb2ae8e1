"""The shape of a stack, read from a CloudFormation template: what the local engine runs in miniature.

The reference template puts an AutoScaling group of web servers behind an application load
balancer. The local engine maps it onto containers:

    AWS::AutoScaling::AutoScalingGroup  DesiredCapacity (MinSize, MaxSize)  -> number of replicas
    UpdatePolicy.AutoScalingRollingUpdate MaxBatchSize, MinInstancesInService -> rolling batches
    AWS::ElasticLoadBalancingV2::Listener Port (HTTP)                      -> the balancer's port
    AWS::ElasticLoadBalancingV2::TargetGroup Port, HealthCheck*, Matcher    -> replica port, health check
    TargetGroupAttributes deregistration_delay.timeout_seconds             -> longest drain

Values may be literals or `!Ref` to parameters (defaults, or overrides given at deploy time).
Resources marked as the canary slot (`Metadata: {Pipeline: {Role: canary-slot}}`: the second
group, target group, launch template and weighted listener rule the aws engine uses for pilot,
half, canary and blue-green deploys) are ignored: the local engine does those strategies itself.
Anything the local engine cannot reproduce faithfully is a `TemplateError` that names the
resource and property, raised before anything is created.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.engines.cfn_template import load_template, parse_template
from pipeline.engines.flag_store_shape import FlagStoreShape, read_flag_store
from pipeline.errors import TemplateError

ASG = "AWS::AutoScaling::AutoScalingGroup"
LAUNCH_TEMPLATE = "AWS::EC2::LaunchTemplate"
LAUNCH_CONFIGURATION = "AWS::AutoScaling::LaunchConfiguration"
ALB = "AWS::ElasticLoadBalancingV2::LoadBalancer"
LISTENER = "AWS::ElasticLoadBalancingV2::Listener"
TARGET_GROUP = "AWS::ElasticLoadBalancingV2::TargetGroup"
CLASSIC_ELB = "AWS::ElasticLoadBalancing::LoadBalancer"
DB_INSTANCE = "AWS::RDS::DBInstance"
CANARY_SLOT_ROLE = "canary-slot"
"""`Metadata.Pipeline.Role` of the resources that make the aws engine's canary slot."""

# Defaults of the AWS APIs when a property is absent (ELBv2 target groups, AutoScaling).
DEFAULT_HEALTHY_THRESHOLD = 5
DEFAULT_UNHEALTHY_THRESHOLD = 2
DEFAULT_HEALTH_TIMEOUT = 5
DEFAULT_DEREGISTRATION_DELAY = 300
DEFAULT_GRACE_PERIOD = 60
"""How long a new replica may take to answer its health check when the group says 0."""

_MATCHER_RE = re.compile(r"^\d{3}(-\d{3})?(,\d{3}(-\d{3})?)*$")


@dataclass(frozen=True)
class DatabaseShape:
    """The template's AWS::RDS::DBInstance (PostgreSQL): a database container on the local profile."""

    resource: str
    """Its logical id (for messages)."""
    name: str
    """DBName: the database the service uses."""
    user: str
    """MasterUsername."""
    snapshot: str = ""
    """The snapshot a new stack's database starts from ('' for an empty one): the value of the
    parameter its DBSnapshotIdentifier refers to."""
    snapshot_parameter: str | None = None
    """That parameter's name (None: the template cannot seed the database from a snapshot)."""


@dataclass(frozen=True)
class Topology:
    """What the local engine builds: N replicas of one image behind one HTTP balancer."""

    desired: int
    min_size: int
    max_size: int
    listener_port: int
    """Port the balancer listens on (inside its container; published on a 127.0.0.1 port)."""
    target_port: int
    """Port the web servers listen on."""
    health_path: str
    health_port: int
    health_codes: str
    """Matcher, e.g. '200' or '200-299' or '200,302'."""
    healthy_threshold: int
    unhealthy_threshold: int
    health_timeout: float
    grace_period: float
    """How long a new replica may take to become healthy before the update fails."""
    max_batch: int
    min_in_service: int
    replacing: bool = False
    """AutoScalingReplacingUpdate: a whole new group, then the old one goes (blue/green)."""
    deregistration_delay: float = DEFAULT_DEREGISTRATION_DELAY
    image_parameter: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    """Every template parameter with its resolved value (defaults overlaid with overrides)."""
    launch_parameters: tuple[str, ...] = ()
    """Parameters the launch template reads (besides the image): changing one replaces replicas."""
    group: str = ""
    """Logical id of the AutoScaling group (for messages)."""
    database: DatabaseShape | None = None
    """The stack's database, when the template declares one."""
    flag_store: FlagStoreShape | None = None
    """The template's `AWS::ElastiCache::ReplicationGroup`: a Redis master and read-only replicas
    serving the feature flags (pipeline/engines/docker_stack/flag_store.py)."""

    def accepts(self, status: int) -> bool:
        for part in self.health_codes.split(","):
            low, _, high = part.partition("-")
            if int(low) <= status <= int(high or low):
                return True
        return False


class _Resolver:
    """Resolves the few intrinsic functions a topology value may use: literals and !Ref to parameters."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, str], source: str) -> None:
        self.template = template
        self.parameters = parameters
        self.source = source

    def value(self, raw: Any, where: str) -> Any:
        if isinstance(raw, dict) and set(raw) == {"Ref"}:
            name = raw["Ref"]
            if name in self.parameters:
                return self.parameters[name]
            raise TemplateError(
                f"{self.source}: {where} refers to {name!r}, which is not a parameter with a value",
                hint="the local engine resolves !Ref to parameters (defaults or overrides) here; use a parameter or a literal",
            )
        if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)).startswith("Fn::"):
            function = next(iter(raw)).removeprefix("Fn::")
            raise TemplateError(
                f"{self.source}: {where} uses !{function}, which the local engine cannot resolve",
                hint="use a literal or a !Ref to a parameter for this property",
            )
        return raw

    def integer(self, raw: Any, where: str) -> int:
        value = self.value(raw, where)
        try:
            return int(str(value))
        except ValueError:
            raise TemplateError(f"{self.source}: {where} must be a whole number, not {value!r}") from None

    def text(self, raw: Any, where: str) -> str:
        value = self.value(raw, where)
        if isinstance(value, dict | list):
            raise TemplateError(f"{self.source}: {where} must be a single value, not {value!r}")
        return str(value)

    def resource_ref(self, raw: Any, where: str) -> str:
        """The logical id a `!Ref` (or `!GetAtt X.Arn`) names."""
        if isinstance(raw, dict) and set(raw) == {"Ref"} and raw["Ref"] in self.template["Resources"]:
            return str(raw["Ref"])
        if isinstance(raw, dict) and set(raw) == {"Fn::GetAtt"} and isinstance(raw["Fn::GetAtt"], list):
            name = str(raw["Fn::GetAtt"][0])
            if name in self.template["Resources"]:
                return name
        raise TemplateError(
            f"{self.source}: {where} must be a !Ref to a resource of this template, not {raw!r}",
            hint="the local engine follows references between the template's own resources only",
        )


def resolve_parameters(
    template: Mapping[str, Any], overrides: Mapping[str, str] | None = None, *, source: str = "<template>"
) -> dict[str, str]:
    """Every parameter's value: its Default overlaid with `overrides`, checked against its constraints."""
    declared = template.get("Parameters") or {}
    if not isinstance(declared, dict):
        raise TemplateError(f"{source}: Parameters must be a mapping")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(
            f"{source}: no parameter named {', '.join(repr(u) for u in unknown)}",
            hint=f"parameters: {', '.join(sorted(declared)) or '(none)'}",
        )
    values: dict[str, str] = {}
    for name, raw_decl in declared.items():
        decl = raw_decl or {}
        if name in overrides:
            value = str(overrides[name])
        elif "Default" in decl:
            default = decl["Default"]
            value = ",".join(str(v) for v in default) if isinstance(default, list) else str(default)
        else:
            continue  # no value: fine unless a topology property refers to it
        _check_constraints(name, decl, value, source)
        values[name] = value
    return values


def _check_constraints(name: str, decl: Mapping[str, Any], value: str, source: str) -> None:
    where = f"{source}: parameter {name}"
    allowed = decl.get("AllowedValues")
    if allowed is not None and value not in [str(v) for v in allowed]:
        raise TemplateError(f"{where} is {value!r}, not one of {', '.join(str(v) for v in allowed)}")
    if decl.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            raise TemplateError(f"{where} must be a number, not {value!r}") from None
        if "MinValue" in decl and number < float(decl["MinValue"]):
            raise TemplateError(f"{where} is {value}, below its MinValue {decl['MinValue']}")
        if "MaxValue" in decl and number > float(decl["MaxValue"]):
            raise TemplateError(f"{where} is {value}, above its MaxValue {decl['MaxValue']}")
    pattern = decl.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(str(pattern), value):
        raise TemplateError(f"{where} is {value!r}, which does not match its AllowedPattern {pattern!r}")


def topology(
    template: Mapping[str, Any],
    overrides: Mapping[str, str] | None = None,
    *,
    source: str = "<template>",
    image_parameter: str = "ImageId",
) -> Topology:
    """Read the stack's shape from a parsed template. Raises TemplateError naming the resource."""
    resources: Mapping[str, Any] = template["Resources"]
    params = resolve_parameters(template, overrides, source=source)
    r = _Resolver(template, params, source)

    for name, res in resources.items():
        kind = _type(res)
        if kind == CLASSIC_ELB:
            raise TemplateError(
                f"{source}: resource {name} is a classic load balancer ({CLASSIC_ELB}), which the local "
                "engine does not support",
                hint=f"use an application load balancer ({ALB}) with a listener and a target group",
            )

    groups = [n for n, res in resources.items() if _type(res) == ASG and not is_canary_slot(res)]
    if len(groups) != 1:
        found = f"found {', '.join(groups)}" if groups else "found none"
        raise TemplateError(
            f"{source}: the local engine needs exactly one {ASG} (the web servers); {found}",
            hint="split other groups into their own templates"
            if groups
            else f"the local engine runs an {ASG} behind an ELBv2 listener and target group, "
            "like the reference service's templates/web.yaml (`pipeline init` writes it)",
        )
    group = groups[0]
    asg = resources[group]
    props = _properties(asg, group, source)
    where = f"resource {group}"

    if "MinSize" not in props or "MaxSize" not in props:
        raise TemplateError(f"{source}: {where} needs MinSize and MaxSize")
    min_size = r.integer(props["MinSize"], f"{where} MinSize")
    max_size = r.integer(props["MaxSize"], f"{where} MaxSize")
    desired = (
        r.integer(props["DesiredCapacity"], f"{where} DesiredCapacity") if "DesiredCapacity" in props else min_size
    )
    if not 1 <= min_size <= desired <= max_size:
        raise TemplateError(
            f"{source}: {where} needs 1 <= MinSize ({min_size}) <= DesiredCapacity ({desired}) <= MaxSize ({max_size})",
            hint="a stack with no web servers cannot serve; check the sizes and their parameters",
        )
    if "LoadBalancerNames" in props:
        raise TemplateError(
            f"{source}: {where} uses LoadBalancerNames (a classic load balancer), which the local engine does not support",
            hint="attach the group to an ELBv2 target group with TargetGroupARNs",
        )

    image_param, launch_params = _launch(resources, props, r, where, source, image_parameter)

    tg_refs = props.get("TargetGroupARNs") or []
    if not isinstance(tg_refs, list) or len(tg_refs) != 1:
        raise TemplateError(
            f"{source}: {where} must name exactly one target group in TargetGroupARNs (found {len(tg_refs) if isinstance(tg_refs, list) else tg_refs!r})",
            hint="the local engine puts one balancer in front of the group",
        )
    tg_name = r.resource_ref(tg_refs[0], f"{where} TargetGroupARNs[0]")
    tg = resources[tg_name]
    if _type(tg) != TARGET_GROUP:
        raise TemplateError(f"{source}: {where} TargetGroupARNs names {tg_name}, which is not a {TARGET_GROUP}")
    health = _target_group(_properties(tg, tg_name, source), r, f"resource {tg_name}", source)
    listener_port = _listener(resources, tg_name, r, source)

    grace = float(r.integer(props.get("HealthCheckGracePeriod", 0), f"{where} HealthCheckGracePeriod"))
    max_batch, min_in_service, replacing = _update_policy(asg, r, where, source, max_size)

    return Topology(
        desired=desired,
        min_size=min_size,
        max_size=max_size,
        listener_port=listener_port,
        **health,
        grace_period=grace or float(DEFAULT_GRACE_PERIOD),
        max_batch=max_batch,
        min_in_service=min_in_service,
        replacing=replacing,
        image_parameter=image_param,
        parameters=params,
        launch_parameters=launch_params,
        group=group,
        database=_database(resources, r, source),
        flag_store=read_flag_store(template, params, source),
    )


def database_shape(
    template: Mapping[str, Any], overrides: Mapping[str, str] | None = None, *, source: str = "<template>"
) -> DatabaseShape | None:
    """The template's database alone (the aws engine reads it; the local one gets it in `topology`)."""
    params = resolve_parameters(template, overrides, source=source)
    return _database(template["Resources"], _Resolver(template, params, source), source)


def _database(resources: Mapping[str, Any], r: _Resolver, source: str) -> DatabaseShape | None:
    """The template's one PostgreSQL DBInstance, if any (TemplateError for what cannot run locally)."""
    found = [n for n, res in resources.items() if _type(res) == DB_INSTANCE and not is_canary_slot(res)]
    if not found:
        return None
    if len(found) > 1:
        raise TemplateError(
            f"{source}: the local engine runs one database per stack; found {', '.join(found)} ({DB_INSTANCE})",
            hint="split other databases into stacks of their own",
        )
    name = found[0]
    props = _properties(resources[name], name, source)
    where = f"resource {name}"
    engine = r.text(props.get("Engine", ""), f"{where} Engine")
    if engine != "postgres":
        raise TemplateError(
            f"{source}: {where} has Engine {engine!r}; the local engine runs PostgreSQL only (Engine: postgres)"
        )
    user = _creation_value(props.get("MasterUsername"))
    if user is None:
        raise TemplateError(f"{source}: {where} needs MasterUsername (the user the service and migrations connect as)")
    snapshot_refs = sorted(_refs(props.get("DBSnapshotIdentifier")) - {"AWS::NoValue"})
    declared = r.template.get("Parameters") or {}
    snapshot_parameter = next((p for p in snapshot_refs if p in declared), None)
    return DatabaseShape(
        resource=name,
        name=r.text(_creation_value(props.get("DBName")) or "postgres", f"{where} DBName"),
        user=r.text(user, f"{where} MasterUsername"),
        snapshot=r.parameters.get(snapshot_parameter, "") if snapshot_parameter else "",
        snapshot_parameter=snapshot_parameter,
    )


def _target_group(tgp: Mapping[str, Any], r: _Resolver, tg_where: str, source: str) -> dict[str, Any]:
    """Port and health check of the target group, as Topology fields."""
    protocol = r.text(tgp.get("Protocol", "HTTP"), f"{tg_where} Protocol")
    if protocol != "HTTP":
        raise TemplateError(
            f"{source}: {tg_where} uses protocol {protocol}; the local engine supports HTTP target groups only"
        )
    if "Port" not in tgp:
        raise TemplateError(f"{source}: {tg_where} needs a Port (the port the web servers listen on)")
    target_port = r.integer(tgp["Port"], f"{tg_where} Port")
    if r.text(tgp.get("HealthCheckEnabled", "true"), f"{tg_where} HealthCheckEnabled").lower() == "false":
        raise TemplateError(
            f"{source}: {tg_where} disables health checks; the local engine only routes to replicas that pass one",
            hint="set HealthCheckPath (and leave HealthCheckEnabled out)",
        )
    health_path = r.text(tgp.get("HealthCheckPath", "/"), f"{tg_where} HealthCheckPath")
    if not health_path.startswith("/"):
        raise TemplateError(f"{source}: {tg_where} HealthCheckPath must start with '/', not {health_path!r}")
    health_protocol = r.text(tgp.get("HealthCheckProtocol", "HTTP"), f"{tg_where} HealthCheckProtocol")
    if health_protocol != "HTTP":
        raise TemplateError(
            f"{source}: {tg_where} HealthCheckProtocol {health_protocol} is not supported locally (HTTP only)"
        )
    raw_port = r.text(tgp.get("HealthCheckPort", "traffic-port"), f"{tg_where} HealthCheckPort")
    health_port = target_port if raw_port == "traffic-port" else r.integer(raw_port, f"{tg_where} HealthCheckPort")
    matcher = tgp.get("Matcher") or {}
    codes = r.text(matcher.get("HttpCode", "200"), f"{tg_where} Matcher.HttpCode") if isinstance(matcher, dict) else ""
    if not _MATCHER_RE.match(codes):
        raise TemplateError(
            f"{source}: {tg_where} Matcher.HttpCode {codes!r} is not like '200', '200-299' or '200,302'"
        )
    healthy = r.integer(
        tgp.get("HealthyThresholdCount", DEFAULT_HEALTHY_THRESHOLD), f"{tg_where} HealthyThresholdCount"
    )
    unhealthy = r.integer(
        tgp.get("UnhealthyThresholdCount", DEFAULT_UNHEALTHY_THRESHOLD), f"{tg_where} UnhealthyThresholdCount"
    )
    timeout = r.integer(
        tgp.get("HealthCheckTimeoutSeconds", DEFAULT_HEALTH_TIMEOUT), f"{tg_where} HealthCheckTimeoutSeconds"
    )
    delay = float(DEFAULT_DEREGISTRATION_DELAY)
    for attr in tgp.get("TargetGroupAttributes") or []:
        if isinstance(attr, dict) and attr.get("Key") == "deregistration_delay.timeout_seconds":
            delay = float(r.integer(attr.get("Value"), f"{tg_where} deregistration_delay.timeout_seconds"))
    return {
        "target_port": target_port,
        "health_path": health_path,
        "health_port": health_port,
        "health_codes": codes,
        "healthy_threshold": max(1, healthy),
        "unhealthy_threshold": max(1, unhealthy),
        "health_timeout": float(max(1, timeout)),
        "deregistration_delay": delay,
    }


def is_canary_slot(resource: Any) -> bool:
    """Whether a resource belongs to the canary slot (Metadata: {Pipeline: {Role: canary-slot}})."""
    metadata = resource.get("Metadata") if isinstance(resource, dict) else None
    pipeline = metadata.get("Pipeline") if isinstance(metadata, dict) else None
    return isinstance(pipeline, dict) and pipeline.get("Role") == CANARY_SLOT_ROLE


def _creation_value(raw: Any) -> Any:
    """A property a database takes when it is created empty: AWS forbids some (MasterUsername,
    DBName) when it is restored from a snapshot, so templates write them as
    `!If [HasSnapshot, !Ref AWS::NoValue, <value>]`; the value is the branch that is not NoValue."""
    if isinstance(raw, dict) and set(raw) == {"Fn::If"} and isinstance(raw["Fn::If"], list) and len(raw["Fn::If"]) == 3:
        for branch in raw["Fn::If"][1:]:
            if not (isinstance(branch, dict) and branch.get("Ref") == "AWS::NoValue"):
                return _creation_value(branch)
        return None
    return raw


def _type(resource: Any) -> str:
    return str(resource.get("Type", "")) if isinstance(resource, dict) else ""


def _properties(resource: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    props = resource.get("Properties") or {}
    if not isinstance(props, dict):
        raise TemplateError(f"{source}: resource {name} Properties must be a mapping")
    return props


def _launch(
    resources: Mapping[str, Any],
    props: Mapping[str, Any],
    r: _Resolver,
    where: str,
    source: str,
    image_parameter: str,
) -> tuple[str | None, tuple[str, ...]]:
    """The image parameter and the other parameters the group's launch template reads."""
    if "LaunchTemplate" in props:
        spec = props["LaunchTemplate"]
        raw = spec.get("LaunchTemplateId") or spec.get("LaunchTemplateName") if isinstance(spec, dict) else None
        name = r.resource_ref(raw, f"{where} LaunchTemplate.LaunchTemplateId")
        lt = resources[name]
        if _type(lt) != LAUNCH_TEMPLATE:
            raise TemplateError(f"{source}: {where} LaunchTemplate names {name}, which is not a {LAUNCH_TEMPLATE}")
        data = _properties(lt, name, source).get("LaunchTemplateData") or {}
        image = data.get("ImageId") if isinstance(data, dict) else None
    elif "LaunchConfigurationName" in props:
        name = r.resource_ref(props["LaunchConfigurationName"], f"{where} LaunchConfigurationName")
        data = _properties(resources[name], name, source)
        image = data.get("ImageId")
    elif "MixedInstancesPolicy" in props:
        raise TemplateError(
            f"{source}: {where} uses a MixedInstancesPolicy, which the local engine does not support",
            hint="use a LaunchTemplate whose ImageId is a parameter",
        )
    else:
        raise TemplateError(f"{source}: {where} has neither a LaunchTemplate nor a LaunchConfigurationName")
    image_param: str | None = None
    if isinstance(image, dict) and set(image) == {"Ref"}:
        image_param = str(image["Ref"])
    elif image is not None:
        raise TemplateError(
            f"{source}: resource {name} ImageId must be a !Ref to a parameter (it is {image!r})",
            hint=f"declare a parameter (e.g. {image_parameter}) so the pipeline can change the image",
        )
    referenced = sorted(_refs(data) - {image_param} if image_param else _refs(data))
    declared = set((r.template.get("Parameters") or {}).keys())
    return image_param, tuple(p for p in referenced if p in declared)


def _refs(value: Any) -> set[str]:
    """Names every !Ref (and ${Name} in !Sub) inside `value` mentions."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::Sub":
                text = item[0] if isinstance(item, list) else item
                if isinstance(text, str):
                    found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
                if isinstance(item, list) and len(item) > 1:
                    found |= _refs(item[1])
            else:
                found |= _refs(item)
    elif isinstance(value, list):
        for item in value:
            found |= _refs(item)
    return found


def _listener(resources: Mapping[str, Any], tg_name: str, r: _Resolver, source: str) -> int:
    ports: list[tuple[str, int]] = []
    for name, res in resources.items():
        if _type(res) != LISTENER:
            continue
        props = _properties(res, name, source)
        forwards = False
        for action in props.get("DefaultActions") or []:
            if not isinstance(action, dict):
                continue
            targets = [action.get("TargetGroupArn")]
            forward = action.get("ForwardConfig") or {}
            if isinstance(forward, dict):
                targets += [t.get("TargetGroupArn") for t in forward.get("TargetGroups") or [] if isinstance(t, dict)]
            for target in targets:
                if target is not None and _names(target, tg_name):
                    forwards = True
        if not forwards:
            continue
        protocol = r.text(props.get("Protocol", "HTTP"), f"resource {name} Protocol")
        if protocol != "HTTP":
            raise TemplateError(
                f"{source}: resource {name} is an {protocol} listener; the local engine serves HTTP only",
                hint="keep an HTTP listener for the target group (certificates do not exist on a laptop)",
            )
        ports.append((name, r.integer(props.get("Port"), f"resource {name} Port")))
    if len(ports) != 1:
        found = ", ".join(n for n, _ in ports) or "none"
        raise TemplateError(
            f"{source}: the local engine needs exactly one HTTP listener forwarding to {tg_name}; found {found}",
            hint=f"add an {LISTENER} whose DefaultActions forward to {tg_name}",
        )
    return ports[0][1]


def _names(value: Any, logical_id: str) -> bool:
    if isinstance(value, dict) and value.get("Ref") == logical_id:
        return True
    att = value.get("Fn::GetAtt") if isinstance(value, dict) else None
    return isinstance(att, list) and bool(att) and att[0] == logical_id


def _update_policy(
    asg: Mapping[str, Any], r: _Resolver, where: str, source: str, max_size: int
) -> tuple[int, int, bool]:
    """(MaxBatchSize, MinInstancesInService, replacing) from the group's UpdatePolicy."""
    policy = asg.get("UpdatePolicy") or {}
    if not isinstance(policy, dict):
        raise TemplateError(f"{source}: {where} UpdatePolicy must be a mapping")
    if "AutoScalingInstanceRefresh" in policy:
        raise TemplateError(
            f"{source}: {where} uses UpdatePolicy AutoScalingInstanceRefresh, which the local engine does not support",
            hint="use AutoScalingRollingUpdate (MaxBatchSize, MinInstancesInService) or AutoScalingReplacingUpdate",
        )
    replacing_policy = policy.get("AutoScalingReplacingUpdate") or {}
    replacing = isinstance(replacing_policy, dict) and str(
        r.value(replacing_policy.get("WillReplace", False), f"{where} AutoScalingReplacingUpdate.WillReplace")
    ).lower() in ("true", "1")
    rolling = policy.get("AutoScalingRollingUpdate") or {}
    if not isinstance(rolling, dict):
        raise TemplateError(f"{source}: {where} AutoScalingRollingUpdate must be a mapping")
    batch = r.integer(rolling.get("MaxBatchSize", 1), f"{where} AutoScalingRollingUpdate.MaxBatchSize")
    min_in = r.integer(
        rolling.get("MinInstancesInService", 0), f"{where} AutoScalingRollingUpdate.MinInstancesInService"
    )
    if batch < 1:
        raise TemplateError(f"{source}: {where} AutoScalingRollingUpdate.MaxBatchSize must be at least 1")
    if rolling and not 0 <= min_in < max_size:
        raise TemplateError(
            f"{source}: {where} AutoScalingRollingUpdate.MinInstancesInService ({min_in}) must be less than MaxSize ({max_size})"
        )
    return batch, min_in, replacing


__all__ = [
    "CANARY_SLOT_ROLE",
    "DB_INSTANCE",
    "DatabaseShape",
    "Topology",
    "database_shape",
    "is_canary_slot",
    "load_template",
    "parse_template",
    "resolve_parameters",
    "topology",
]
