# The production footprint of mlplatform on AWS, one module per concern:
#
#   kms       one customer-managed key for everything encrypted at rest (S3, RDS, ElastiCache, ECR,
#             EKS secrets, logs)
#   network   VPC, public + private subnets per AZ, NAT, flow logs
#   eks       the cluster, a CPU node group (Airflow, MPI launchers) and a GPU node group (trainer
#             pods) with the NVIDIA device plugin
#   storage   S3 buckets: run artifacts, the DVC remote, MLflow artifacts (+ their access logs)
#   database  RDS PostgreSQL: Airflow metadata, MLflow backend, Feast registry
#   cache     ElastiCache Redis: the Feast online store
#   sharedfs  EFS + the EFS CSI driver: the platform home (MLP_HOME) shared by Airflow's task pods
#   registry  ECR repositories of the platform's images (docker/*.Dockerfile)
#   irsa      IAM roles for the Kubernetes service accounts (Airflow, trainer), least privilege
#
# outputs.tf turns the result into the platform's settings (MLP_* environment variables).

locals {
  name = "mlplatform-${var.environment}"
}

data "aws_caller_identity" "current" {}

module "kms" {
  source     = "./modules/kms"
  name       = local.name
  region     = var.region
  account_id = data.aws_caller_identity.current.account_id
}

module "network" {
  source      = "./modules/network"
  name        = local.name
  cidr        = var.vpc_cidr
  azs         = var.availability_zones
  kms_key_arn = module.kms.key_arn
}

module "eks" {
  source             = "./modules/eks"
  name               = local.name
  cluster_version    = var.cluster_version
  subnet_ids         = module.network.private_subnet_ids
  admin_cidrs        = var.cluster_admin_cidrs
  kms_key_arn        = module.kms.key_arn
  cpu_instance_types = var.cpu_instance_types
  gpu_instance_types = var.gpu_instance_types
  gpu_nodes_max      = var.gpu_nodes_max
}

module "storage" {
  source      = "./modules/storage"
  name        = local.name
  kms_key_arn = module.kms.key_arn
}

module "database" {
  source         = "./modules/database"
  name           = local.name
  vpc_id         = module.network.vpc_id
  subnet_ids     = module.network.private_subnet_ids
  client_sg_id   = module.eks.node_security_group_id
  instance_class = var.db_instance_class
  kms_key_arn    = module.kms.key_arn
}

module "cache" {
  source       = "./modules/cache"
  name         = local.name
  vpc_id       = module.network.vpc_id
  subnet_ids   = module.network.private_subnet_ids
  client_sg_id = module.eks.node_security_group_id
  node_type    = var.redis_node_type
  kms_key_arn  = module.kms.key_arn
}

module "sharedfs" {
  source            = "./modules/sharedfs"
  name              = local.name
  vpc_id            = module.network.vpc_id
  subnet_ids        = module.network.private_subnet_ids
  client_sg_id      = module.eks.node_security_group_id
  kms_key_arn       = module.kms.key_arn
  cluster_name      = module.eks.cluster_name
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer       = module.eks.oidc_issuer
}

module "registry" {
  source       = "./modules/registry"
  name         = local.name
  repositories = ["airflow", "trainer"]
  kms_key_arn  = module.kms.key_arn
}

module "irsa" {
  source            = "./modules/irsa"
  name              = local.name
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer       = module.eks.oidc_issuer
  kms_key_arn       = module.kms.key_arn
  # who may do what: Airflow's task pods run the stages (every bucket); the trainer reads training
  # sets and writes checkpoints and models under the runs bucket and MLflow's. Nothing else of
  # Airflow (scheduler, triggerer, API server) gets an AWS role.
  service_accounts = {
    airflow = {
      namespace       = var.airflow_namespace
      service_account = "airflow-worker"
      bucket_arns     = module.storage.bucket_arns
    }
    trainer = {
      namespace       = var.training_namespace
      service_account = "mlplatform-trainer"
      bucket_arns     = [module.storage.bucket_arns_by_use["runs"], module.storage.bucket_arns_by_use["mlflow"]]
    }
  }
}
