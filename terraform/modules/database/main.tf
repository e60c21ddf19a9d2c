# RDS PostgreSQL for Airflow's metadata, MLflow's backend store and Feast's SQL registry (one
# database each, created by the operator after apply: see the README). Multi-AZ, KMS-encrypted,
# private, TLS enforced, IAM authentication on, query and connection logging to CloudWatch,
# deletion protection. The master password is generated and kept by RDS in Secrets Manager
# (manage_master_user_password): it never appears in Terraform code, variables or outputs.

variable "name" {
  description = "identifier prefix"
  type        = string
}

variable "vpc_id" {
  description = "VPC of the instance"
  type        = string
}

variable "subnet_ids" {
  description = "private subnets of the DB subnet group"
  type        = list(string)
}

variable "client_sg_id" {
  description = "security group allowed to connect (the EKS nodes')"
  type        = string
}

variable "instance_class" {
  description = "instance class"
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for storage, Performance Insights and the master-user secret"
  type        = string
}

variable "engine_version" {
  description = "PostgreSQL major version"
  type        = string
  default     = "17"
}

resource "aws_db_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
}

resource "aws_security_group" "this" {
  name        = "${var.name}-postgres"
  description = "PostgreSQL: from the EKS nodes only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  security_group_id            = aws_security_group.this.id
  description                  = "PostgreSQL from the EKS nodes"
  referenced_security_group_id = var.client_sg_id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_db_parameter_group" "this" {
  name   = "${var.name}-postgres${var.engine_version}"
  family = "postgres${var.engine_version}"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  identifier     = "${var.name}-postgres"
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  allocated_storage     = 50
  max_allocated_storage = 500
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = var.kms_key_arn

  db_name                       = "airflow"
  username                      = "mlplatform"
  manage_master_user_password   = true
  master_user_secret_kms_key_id = var.kms_key_arn

  iam_database_authentication_enabled = true
  db_subnet_group_name                = aws_db_subnet_group.this.name
  vpc_security_group_ids              = [aws_security_group.this.id]
  parameter_group_name                = aws_db_parameter_group.this.name
  publicly_accessible                 = false
  multi_az                            = true

  backup_retention_period    = 14
  copy_tags_to_snapshot      = true
  deletion_protection        = true
  skip_final_snapshot        = false
  final_snapshot_identifier  = "${var.name}-postgres-final"
  auto_minor_version_upgrade = true

  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.kms_key_arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.monitoring.arn
}

output "address" {
  description = "PostgreSQL host"
  value       = aws_db_instance.this.address
}

output "port" {
  description = "PostgreSQL port"
  value       = aws_db_instance.this.port
}

output "username" {
  description = "master user name"
  value       = aws_db_instance.this.username
}

output "master_secret_arn" {
  description = "Secrets Manager secret holding the master password (managed and rotated by RDS)"
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}
