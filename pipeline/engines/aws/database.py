"""The stack's database on the aws profile: the template's AWS::RDS::DBInstance, made and deleted by
CloudFormation with the rest of the stack.

- Its address and port are the stack's outputs `DatabaseAddress` and `DatabasePort`; the user is
  the DBInstance's MasterUsername; the password comes from the environment variable the
  definition names (`Database(password_secret=...)`, a secret on CI), and is sent as the
  template's `DatabasePassword` parameter (NoEcho) with every deploy, never read back.
- A snapshot is an RDS DB snapshot of the instance (`create_db_snapshot`, waited for until
  `available`); a test stack starts from it through the parameter its DBSnapshotIdentifier
  refers to (`DatabaseSnapshot`): CloudFormation restores it. The snapshot bears the test stack's
  name and is deleted with that stack.
- Masking: a stack restored from a snapshot (its snapshot parameter set) has the columns the
  definition marks sensitive overwritten, over SQL from this machine to the stack's endpoint, in one
  transaction, right after CloudFormation created it and before the deploy returns (so before the
  stage verifies it or any later stage reads it). The instances CloudFormation started meanwhile
  may have read unmasked rows in those seconds. The engine gets masks only for ephemeral
  environments (profiles/aws.py): production is never masked, even if it was restored from one.
- The fleet (what a contract checks) is read from the running instances, not from what the stack
  asks for: the stack's Auto Scaling groups (its resources), their instances (Auto Scaling), and
  the image each instance was launched from (EC2's ImageId). A rolling update that stopped half
  way leaves instances on the old image while the template already names the new one. The groups'
  configured images (the stack's parameters: what a replacement instance would be launched from)
  are listed as well, so a group that would bring an old image back counts too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.engines.aws.operations import Pacing
from pipeline.engines.stack import DatabaseEndpoint, OnEvent, Replica, StackState
from pipeline.engines.topology import ASG, DatabaseShape, database_shape, is_canary_slot
from pipeline.errors import StackOperationError, ToolMissingError

if TYPE_CHECKING:
    from pipeline.engines.aws.session import AwsSession
    from pipeline.engines.aws.template import StackTemplate
    from pipeline.model import Sensitive

PASSWORD_PARAMETER = "DatabasePassword"
ADDRESS_OUTPUT = "DatabaseAddress"
PORT_OUTPUT = "DatabasePort"
SNAPSHOT_TIMEOUT = 3600.0
CONNECT_TIMEOUT = 30


class StackDatabase:
    """One engine's view of its stacks' databases (see the module docstring)."""

    def __init__(
        self,
        session: AwsSession,
        template: StackTemplate,
        pacing: Pacing,
        environ: Mapping[str, str],
        password_secret: str | None,
        masks: Sequence[Sensitive] = (),
    ) -> None:
        self.session = session
        self.template = template
        self.pacing = pacing
        self.environ = environ
        self.password_secret = password_secret
        self.masks = tuple(masks)

    def shape(self) -> DatabaseShape | None:
        return database_shape(self.template.doc(), source=self.template.source)

    def secret_parameters(self) -> dict[str, str]:
        """The password parameter, from the secret (nothing when either is missing)."""
        if self.password_secret is None or PASSWORD_PARAMETER not in self.template.parameters():
            return {}
        value = self.environ.get(self.password_secret)
        return {PASSWORD_PARAMETER: value} if value else {}

    def parameters(self, snapshot: str | None) -> dict[str, str]:
        shape = self.shape()
        if shape is None or shape.snapshot_parameter is None:
            return {}
        return {shape.snapshot_parameter: snapshot or ""}

    def endpoint(self, state: StackState) -> DatabaseEndpoint | None:
        shape = self.shape()
        address = state.details.get(f"output.{ADDRESS_OUTPUT}")
        if shape is None or not state.exists or not address:
            return None
        password = self.environ.get(self.password_secret or "", "")
        port = int(state.details.get(f"output.{PORT_OUTPUT}") or 5432)
        return DatabaseEndpoint(host=address, port=port, user=shape.user, password=password, name=shape.name)

    def restored_from(self, state: StackState) -> str | None:
        """The snapshot the stack's database was restored from (its snapshot parameter), or None."""
        shape = self.shape()
        if shape is None or shape.snapshot_parameter is None or not state.exists:
            return None
        return state.parameters.get(shape.snapshot_parameter) or None

    def mask(self, state: StackState, *, on_event: OnEvent) -> None:
        """Overwrite the sensitive columns of the stack's database (masking.py's guarded UPDATEs)
        in one transaction; nothing without masks. The stack's endpoint must answer from here."""
        if not self.masks:
            return
        endpoint = self.endpoint(state)
        if endpoint is None:
            raise StackOperationError(
                f"stack {state.name} has no database endpoint to mask its sensitive columns at",
                hint=f"its template's outputs {ADDRESS_OUTPUT} and {PORT_OUTPUT} say where its database answers",
            )
        try:
            import psycopg
        except ImportError:
            raise ToolMissingError(
                f"masking the database of {state.name} needs psycopg",
                hint="install pipeline-as-code[schema] (a pipeline with a database needs it)",
            ) from None
        from pipeline.schema.masking import mask_statements

        on_event(
            f"masking {', '.join(m.column for m in self.masks)} in the database of {state.name} ({endpoint.where})"
        )
        try:
            with (
                psycopg.connect(endpoint.url, connect_timeout=CONNECT_TIMEOUT) as connection,
                connection.transaction(),
            ):
                for statement in mask_statements(self.masks):
                    connection.execute(statement)
        except psycopg.Error as exc:
            raise StackOperationError(
                f"masking the sensitive columns of {state.name}'s database ({endpoint.where}) failed: "
                f"{str(exc).strip()[-1500:]}",
                hint="each Sensitive(mask=...) is an SQL expression the column is set to; the database must "
                "answer from this machine (from inside the VPC or through a tunnel); nothing was masked",
            ) from exc

    def instance_id(self, stack: str) -> str | None:
        """The physical id of the stack's DBInstance (None: the stack or the instance is missing)."""
        shape = self.shape()
        if shape is None:
            return None
        try:
            answer = self.session.call(
                "cloudformation", "describe_stack_resource", StackName=stack, LogicalResourceId=shape.resource
            )
        except StackOperationError:
            return None
        except Exception as exc:
            if "does not exist" in str(exc):
                return None
            raise
        physical = answer.get("StackResourceDetail", {}).get("PhysicalResourceId")
        return str(physical) if physical else None

    def snapshot(self, stack: str, name: str, *, on_event: OnEvent) -> str:
        """An RDS snapshot of the stack's instance called `name`, available (an existing one of
        that name is used as it is: a re-run after a crash does not take a second)."""
        instance = self.instance_id(stack)
        if instance is None:
            raise StackOperationError(f"stack {stack} has no database instance to take a snapshot of")
        if self._status(name) is None:
            on_event(f"taking snapshot {name} of {instance} (RDS)")
            self.session.call("rds", "create_db_snapshot", DBSnapshotIdentifier=name, DBInstanceIdentifier=instance)
        deadline = self.pacing.clock() + SNAPSHOT_TIMEOUT
        while True:
            status = self._status(name)
            if status == "available":
                return name
            if status in ("failed", "deleted", None) or self.pacing.clock() > deadline:
                raise StackOperationError(f"snapshot {name} of {instance} is {status or 'gone'}, not available")
            on_event(f"snapshot {name}: {status}")
            self.pacing.sleep(self.pacing.poll_seconds)

    def delete_snapshot(self, name: str, *, on_event: OnEvent) -> None:
        if self._status(name) is None:
            return
        on_event(f"deleting snapshot {name}")
        self.session.call("rds", "delete_db_snapshot", DBSnapshotIdentifier=name)

    def fleet(self, state: StackState, image_parameter: str) -> list[Replica]:
        """Every instance of the stack's Auto Scaling groups with the image it runs (EC2's word),
        then each group's configured image (`configured_groups`); nothing for a missing stack."""
        if not state.exists:
            return []
        return self.instances(state) + configured_groups(state, image_parameter)

    def instances(self, state: StackState) -> list[Replica]:
        """The instances the stack's Auto Scaling groups hold (any lifecycle state but gone), each
        named by its id and group, with the image EC2 says it was launched from."""
        resources = self.session.call("cloudformation", "describe_stack_resources", StackName=state.name).get(
            "StackResources", []
        )
        groups = {
            str(r["PhysicalResourceId"]): str(r.get("LogicalResourceId", ""))
            for r in resources
            if r.get("ResourceType") == ASG and r.get("PhysicalResourceId")
        }
        if not groups:
            return []
        slot = {name for name, res in (self.template.doc().get("Resources") or {}).items() if is_canary_slot(res)}
        weight = _int(state.parameters.get("CanaryWeight", "0"))
        members: list[tuple[str, str]] = []  # (instance id, group logical id)
        answer = self.session.call("autoscaling", "describe_auto_scaling_groups", AutoScalingGroupNames=sorted(groups))
        for group in answer.get("AutoScalingGroups", []):
            logical = groups.get(str(group.get("AutoScalingGroupName")), "")
            members += [(str(i["InstanceId"]), logical) for i in group.get("Instances", []) if i.get("InstanceId")]
        if not members:
            return []
        images: dict[str, str] = {}
        reservations = self.session.call(
            "ec2", "describe_instances", InstanceIds=[instance for instance, _ in members]
        ).get("Reservations", [])
        for reservation in reservations:
            for instance in reservation.get("Instances", []):
                if (instance.get("State") or {}).get("Name") != "terminated":
                    images[str(instance["InstanceId"])] = str(instance.get("ImageId", ""))
        return [
            Replica(
                name=f"instance {instance} of {logical}",
                image=images[instance],
                serving=weight > 0 if logical in slot else weight < 100,
            )
            for instance, logical in members
            if instance in images
        ]

    def _status(self, name: str) -> str | None:
        try:
            answer = self.session.call("rds", "describe_db_snapshots", DBSnapshotIdentifier=name)
        except Exception as exc:
            if "DBSnapshotNotFound" in str(exc) or "not found" in str(exc).lower():
                return None
            raise
        snapshots = answer.get("DBSnapshots") or []
        return str(snapshots[0].get("Status", "")) if snapshots else None


def configured_groups(state: StackState, image_parameter: str) -> list[Replica]:
    """The stack's groups and the image each is configured to launch, from its parameters (the
    web group's, and the canary slot's when it has instances): not what runs, what would run."""
    if not state.exists:
        return []
    params = state.parameters
    found = []
    image = params.get(image_parameter)
    if image:
        size = params.get("DesiredCapacity", "")
        found.append(
            Replica(name=f"launch template of the web group{f' ({size} instances)' if size else ''}", image=image)
        )
    canary = params.get("CanaryImageId", "")
    capacity = _int(params.get("CanaryCapacity", "0"))
    if canary and capacity > 0:
        weight = _int(params.get("CanaryWeight", "0"))
        found.append(
            Replica(name=f"launch template of the canary slot ({capacity} instances)", image=canary, serving=weight > 0)
        )
    return found


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


__all__ = ["PASSWORD_PARAMETER", "StackDatabase", "configured_groups"]
