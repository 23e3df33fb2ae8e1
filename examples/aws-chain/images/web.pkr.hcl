# Stub Packer template for the example pipeline: `pipeline validate` checks that it exists.
# The full image (docker source for the local profile, amazon-ebs for aws) is the repository's
# images/web.pkr.hcl; `pipeline init` writes it into a new project.
variable "version" {
  type    = string
  default = "0.0.0"
}

source "docker" "web" {
  image  = "pipeline-base:bookworm"
  commit = true
}

build {
  sources = ["source.docker.web"]
}
