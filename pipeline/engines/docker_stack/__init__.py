"""The local profile's stack engine: a CloudFormation template's topology in miniature, on this
machine's Docker (a network, N replicas, one nginx balancer). See `engine.py`."""

from pipeline.engines.docker_stack.engine import DockerStackEngine

__all__ = ["DockerStackEngine"]
