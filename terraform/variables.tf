variable "region" {
  description = "AWS region of everything"
  type        = string
  default     = "eu-west-1"
}

variable "environment" {
  description = "name of this deployment (prefix of every resource name): prod, staging ..."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.environment))
    error_message = "environment: 2-21 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC; /20 subnets are carved from it, one public and one private per AZ"
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "availability zones of the region, named explicitly (a fixed set: the subnets never move when AWS adds a zone); EKS needs at least 2"
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "availability_zones: EKS needs at least 2."
  }
}

variable "cluster_version" {
  description = "EKS Kubernetes version"
  type        = string
  default     = "1.33"
}

variable "cluster_admin_cidrs" {
  description = "CIDRs allowed to reach the EKS API's public endpoint; empty = private endpoint only"
  type        = list(string)
  default     = []
}

variable "cpu_instance_types" {
  description = "instance types of the system/Airflow node group"
  type        = list(string)
  default     = ["m6i.xlarge"]
}

variable "gpu_instance_types" {
  description = "instance types of the GPU node group (trainer pods)"
  type        = list(string)
  default     = ["g5.2xlarge"]
}

variable "gpu_nodes_max" {
  description = "upper bound of the GPU node group; it scales from 0"
  type        = number
  default     = 4
}

variable "airflow_namespace" {
  description = "namespace of the Airflow Helm release (deploy/k8s/airflow-values.yaml)"
  type        = string
  default     = "airflow"
}

variable "training_namespace" {
  description = "namespace of trainer pods and MPIJobs (MLP_K8S_NAMESPACE)"
  type        = string
  default     = "mlplatform"
}

variable "db_instance_class" {
  description = "RDS PostgreSQL instance class (Airflow metadata, MLflow backend, Feast registry)"
  type        = string
  default     = "db.m6g.large"
}

variable "redis_node_type" {
  description = "ElastiCache node type of the Feast online store"
  type        = string
  default     = "cache.m6g.large"
}
