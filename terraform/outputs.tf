# What the platform needs from this footprint, by the names it reads.
#
# platform_env: the non-secret settings (MLP_* of mlplatform/settings.py and mlplatform/k8s/settings.py),
# ready for the Helm values' `env` (deploy/k8s/airflow-values.yaml):
#
#   terraform output -json platform_env
#
# Secrets are not outputs: secret_sources says which Secrets Manager secret holds each one, from
# which the operator fills the Kubernetes Secrets that the Helm values name (see the README).

locals {
  buckets = module.storage.bucket_names_by_use
}

output "platform_env" {
  description = "non-secret platform settings, by environment variable name"
  value = {
    MLP_STORAGE_URI           = "s3://${local.buckets["runs"]}/runs"
    MLP_DVC_REMOTE            = "s3://${local.buckets["dvc"]}/remote"
    MLP_MLFLOW_ARTIFACT_URI   = "s3://${local.buckets["mlflow"]}/artifacts"
    MLP_FEAST_ONLINE_STORE    = "redis"
    MLP_TRAINING_BACKEND      = "kubernetes"
    MLP_K8S_NAMESPACE         = var.training_namespace
    MLP_K8S_SERVICE_ACCOUNT   = "mlplatform-trainer"
    MLP_K8S_S3_SECRET         = "" # IRSA: no S3 key in any pod
    MLP_K8S_AWS_REGION        = var.region
    MLP_K8S_GPU_NODE_SELECTOR = jsonencode({ "nvidia.com/gpu.present" = "true" })
  }
}

output "secret_sources" {
  description = "where each secret setting comes from (Secrets Manager ARNs), never the value"
  value = {
    postgres_master_password = module.database.master_secret_arn
    redis_auth_token         = module.cache.auth_secret_arn
  }
}

output "postgres" {
  description = "PostgreSQL host, port and master user (databases: airflow, mlflow, feast)"
  value = {
    host     = module.database.address
    port     = module.database.port
    username = module.database.username
  }
}

output "redis" {
  description = "Feast online store endpoint (TLS; AUTH token in secret_sources.redis_auth_token)"
  value = {
    host = module.cache.primary_endpoint
    port = module.cache.port
  }
}

output "efs_file_system_id" {
  description = "EFS of the shared platform home: EFS_FILE_SYSTEM_ID of deploy/k8s/shared-home.yaml"
  value       = module.sharedfs.file_system_id
}

output "images" {
  description = "ECR repository per image: airflow (Helm values images.airflow.repository), trainer (pipelines' training.image)"
  value       = module.registry.repository_urls
}

output "service_account_role_arns" {
  description = "IRSA role per service account: annotate it with eks.amazonaws.com/role-arn"
  value       = module.irsa.role_arns
}

output "cluster_name" {
  description = "EKS cluster: aws eks update-kubeconfig --name <this>"
  value       = module.eks.cluster_name
}
