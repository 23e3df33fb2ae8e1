"""The `aws` profile: CloudFormation stacks through boto3, and the AWS plumbing (session, endpoints,
credentials, error mapping) the AMI bake and `pipeline doctor` share with it."""
