# The live-schema service's image: a small Python app server (app/app.py) on port 80 that greets
# from PostgreSQL and counts visits, and answers "OK" at /health without the database.
#
#   docker.web      local profile: a Docker image committed from the base image (no registry needed)
#   amazon-ebs.web  aws profile: an AMI (real AWS, or an emulator such as moto through aws_endpoint)
#
# Both sources run the same provisioner script (images/web/provision.sh). Written for Packer 1.6.6
# (Debian's), like the reference service's template (see docs/bake.md for newer Packer versions).

variable "version" {
  type        = string
  description = "Release shown on the page: ... from live-schema <version>."
}

variable "base_image" {
  type        = string
  default     = "pipeline-base:bookworm"
  description = "Docker base image (docker.web). `pipeline image base` builds pipeline-base:bookworm from Debian's mirror; on a laptop with a registry, debian:bookworm-slim works too."
}

variable "pull_base" {
  type        = bool
  default     = true
  description = "Pull the base image first. The Bake stage passes false: it has made sure the image is local."
}

variable "manifest" {
  type        = string
  default     = "packer-manifest.json"
  description = "Where the manifest post-processor writes (it appends; read the build by last_run_uuid)."
}

variable "aws_region" {
  type    = string
  default = "us-east-1"
}

variable "aws_endpoint" {
  type        = string
  default     = ""
  description = "EC2 endpoint of an emulator (moto, MiniStack); empty for real AWS. With an emulator there is no instance to reach: the provisioners are skipped and the image is checked through docker.web."
}

variable "bake_labels" {
  type        = string
  default     = ""
  description = "Set by the Bake stage: the bake's identity as labels (io.pipeline.pipeline=... io.pipeline.stage=... io.pipeline.run-id=...), put on the image by Packer's own commit, so an image committed as a bake is killed is found and removed by the next bake. Empty when run by hand."
}

variable "source_ami" {
  type        = string
  default     = ""
  description = "AMI to start from; empty: the newest official Debian 12 AMI. Emulators need one of their own AMI ids (moto: e.g. ami-1e749f67)."
}

variable "instance_type" {
  type    = string
  default = "t3.micro"
}

locals {
  emulated_aws = var.aws_endpoint != ""
}

source "docker" "web" {
  image  = var.base_image
  pull   = var.pull_base
  commit = true
  # Packer's docker builder commits with ENTRYPOINT ["/bin/sh"]: set the real one, with absolute paths
  # (an imported debootstrap image has no ENV either).
  changes = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENTRYPOINT [\"/usr/bin/python3\", \"/opt/app/app.py\"]",
    "CMD []",
    "EXPOSE 80",
    "WORKDIR /",
    "LABEL org.opencontainers.image.title=live-schema org.opencontainers.image.version=${var.version} ${var.bake_labels}",
  ]
}

source "amazon-ebs" "web" {
  region        = var.aws_region
  instance_type = var.instance_type
  ami_name      = "live-schema-${var.version}-{{timestamp}}"
  source_ami    = var.source_ami
  dynamic "source_ami_filter" {
    for_each = var.source_ami == "" ? [1] : []
    content {
      filters = {
        name                = "debian-12-amd64-*"
        virtualization-type = "hvm"
        root-device-type    = "ebs"
      }
      owners      = ["136693071363"] # Debian
      most_recent = true
    }
  }
  ssh_username = "admin"
  # An emulator has no instance to log in to and no real credentials to check.
  communicator               = local.emulated_aws ? "none" : "ssh"
  custom_endpoint_ec2        = var.aws_endpoint
  skip_region_validation     = local.emulated_aws
  skip_credential_validation = local.emulated_aws
  skip_metadata_api_check    = local.emulated_aws
  tags = {
    Name    = "live-schema"
    Version = var.version
  }
}

build {
  sources = ["source.docker.web", "source.amazon-ebs.web"]

  provisioner "file" {
    except      = local.emulated_aws ? ["amazon-ebs.web"] : []
    source      = "${path.root}/../app/app.py"
    destination = "/tmp/app.py"
  }

  provisioner "shell" {
    # With communicator "none" (an emulator) nothing can be uploaded: skip, check through docker.web.
    except           = local.emulated_aws ? ["amazon-ebs.web"] : []
    environment_vars = ["VERSION=${var.version}"]
    scripts          = ["${path.root}/web/provision.sh"]
  }

  post-processor "manifest" {
    output = var.manifest
  }
}
