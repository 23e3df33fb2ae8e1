# Plugins for Packer >= 1.7 (read by `packer init images/plugins.pkr.hcl`; the Bake stage runs it
# for you when it finds Packer >= 1.7). Packer 1.6.6 has these builders built in and cannot parse
# `required_plugins`, so this file is separate from web.pkr.hcl and is never built on its own.
# Packer >= 1.10 needs it: that is the release that stopped bundling the docker and amazon plugins.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    docker = {
      source  = "github.com/hashicorp/docker"
      version = ">= 1.0.8"
    }
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.0"
    }
  }
}
