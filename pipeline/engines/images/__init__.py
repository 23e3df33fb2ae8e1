"""Image engines: what builds a Bake's images on each profile (Docker and Packer's docker builder
locally; Packer's amazon-ebs builder and EC2 on aws), behind the contract in `base.py`."""
