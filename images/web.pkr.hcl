# The reference "Hello World" web image: Apache serving "Hello World <version>" on port 80 and
# "OK" at /health.
#
#   docker.web      local profile: a Docker image committed from the base image (no registry needed)
#   amazon-ebs.web  aws profile: an AMI (real AWS, or an emulator such as moto through aws_endpoint)
#
# Both sources run the same provisioner scripts (images/web/), so checking the Docker image proves
# the provisioning the AMI gets. `pipeline run` drives this template through the Bake stage:
#
#   packer build -machine-readable -only=docker.web -var version=1.0.0 images/web.pkr.hcl
#
# Packer versions. Written for Packer 1.6.6 (Debian's package), whose docker and amazon builders are
# built in. Packer 1.7 to 1.9 still bundle both, so this file works unchanged there. Packer >= 1.10
# no longer bundles them: they are declared with `required_plugins` in images/plugins.pkr.hcl and
# installed with `packer init images/plugins.pkr.hcl` (the Bake stage runs that for you on >= 1.7).
# The declaration lives in its own file because 1.6.6 cannot parse `required_plugins`; Bake builds
# this single file, so 1.6.6 never reads it. See docs/bake.md.

variable "version" {
  type        = string
  description = "Release shown on the page: Hello World <version>."
}

variable "feature_fault" {
  type        = string
  default     = ""
  description = "Rehearsals only: '500' makes the flag-controlled /feature page fail for the users who get the new variant."
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

variable "bake_labels" {
  type        = string
  default     = ""
  description = "Set by the Bake stage: the bake's identity as labels (io.pipeline.pipeline=... io.pipeline.stage=... io.pipeline.run-id=...), put on the image by Packer's own commit, so an image committed as a bake is killed is found and removed by the next bake. Empty when run by hand."
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
    "ENTRYPOINT [\"/usr/local/sbin/apache2-foreground\"]",
    "CMD []",
    "EXPOSE 80",
    "WORKDIR /",
    "LABEL org.opencontainers.image.title=hello-web org.opencontainers.image.version=${var.version} ${var.bake_labels}",
  ]
}

source "amazon-ebs" "web" {
  region        = var.aws_region
  instance_type = var.instance_type
  ami_name      = "hello-web-${var.version}-{{timestamp}}"
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
    Name    = "hello-web"
    Version = var.version
  }
}

build {
  sources = ["source.docker.web", "source.amazon-ebs.web"]

  # The application part (images/web/app/): uploaded, then put in place by provision.sh.
  provisioner "file" {
    except      = local.emulated_aws ? ["amazon-ebs.web"] : []
    source      = "${path.root}/web/app/"
    destination = "/tmp/app"
  }

  provisioner "shell" {
    # With communicator "none" (an emulator) nothing can be uploaded: skip, check through docker.web.
    except           = local.emulated_aws ? ["amazon-ebs.web"] : []
    environment_vars = ["VERSION=${var.version}", "FEATURE_FAULT=${var.feature_fault}"]
    scripts = [
      "${path.root}/web/provision.sh",
      "${path.root}/web/cleanup.sh",
    ]
  }

  post-processor "manifest" {
    output = var.manifest
  }
}
