provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "mlplatform"
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}

# The NVIDIA device plugin is installed into the new cluster; the helm provider authenticates with
# a short-lived token from `aws eks get-token` (no kubeconfig, no static credential).
provider "helm" {
  kubernetes = {
    host                   = module.eks.cluster_endpoint
    cluster_ca_certificate = base64decode(module.eks.cluster_ca_certificate)
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
    }
  }
}
