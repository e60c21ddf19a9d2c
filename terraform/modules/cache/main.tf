# ElastiCache Redis: the Feast online store (MLP_FEAST_ONLINE_STORE=redis). Two nodes across AZs
# with automatic failover, encrypted at rest (KMS) and in transit (TLS), AUTH required. The AUTH
# token is generated here and kept in Secrets Manager for the cluster's secret sync; no person
# types or sees it, and it appears in no output (Terraform's state holds it: keep the state in an
# encrypted backend, as the README says).

terraform {
  required_providers {
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}

variable "name" {
  description = "identifier prefix"
  type        = string
}

variable "vpc_id" {
  description = "VPC of the cluster"
  type        = string
}

variable "subnet_ids" {
  description = "private subnets of the cache subnet group"
  type        = list(string)
}

variable "client_sg_id" {
  description = "security group allowed to connect (the EKS nodes')"
  type        = string
}

variable "node_type" {
  description = "node type"
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for data at rest and the AUTH token secret"
  type        = string
}

resource "aws_elasticache_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
}

resource "aws_security_group" "this" {
  name        = "${var.name}-redis"
  description = "Redis: from the EKS nodes only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  security_group_id            = aws_security_group.this.id
  description                  = "Redis (TLS) from the EKS nodes"
  referenced_security_group_id = var.client_sg_id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

resource "random_password" "auth" {
  length  = 64
  special = false # ElastiCache AUTH tokens allow only some specials; 64 alphanumerics suffice
}

resource "aws_secretsmanager_secret" "auth" {
  #checkov:skip=CKV2_AWS_57:rotating an ElastiCache AUTH token needs a rotation Lambda and a client re-read; rotate by tainting random_password.auth (the README says how)
  name       = "${var.name}/redis-auth-token"
  kms_key_id = var.kms_key_arn
}

resource "aws_secretsmanager_secret_version" "auth" {
  secret_id     = aws_secretsmanager_secret.auth.id
  secret_string = random_password.auth.result
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id       = "${var.name}-feast"
  description                = "Feast online store of ${var.name}"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.node_type
  port                       = 6379
  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [aws_security_group.this.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = var.kms_key_arn
  transit_encryption_enabled = true
  auth_token                 = random_password.auth.result

  snapshot_retention_limit   = 7
  auto_minor_version_upgrade = true
}

output "primary_endpoint" {
  description = "primary endpoint host (TLS on port 6379)"
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "port" {
  description = "Redis port"
  value       = aws_elasticache_replication_group.this.port
}

output "auth_secret_arn" {
  description = "Secrets Manager secret holding the AUTH token"
  value       = aws_secretsmanager_secret.auth.arn
}
