# EFS: the platform home (MLP_HOME) shared by every Airflow task pod. With the KubernetesExecutor
# each task is a new pod, and the platform keeps run state under its home (the DVC data
# repository, the Feast registry and offline files, run locks and config snapshots, the model
# base): without one shared filesystem a run's tasks would not see each other's state.
# Encrypted with the platform key, reachable from the EKS nodes only, backed up by AWS Backup's
# default EFS policy; mounted through the EFS CSI driver (an EKS add-on whose controller gets its
# own IRSA role).

variable "name" {
  description = "resource name prefix"
  type        = string
}

variable "vpc_id" {
  description = "VPC of the mount targets"
  type        = string
}

variable "subnet_ids" {
  description = "private subnets: one mount target in each"
  type        = list(string)
}

variable "client_sg_id" {
  description = "security group allowed to mount (the EKS nodes')"
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key of the file system"
  type        = string
}

variable "cluster_name" {
  description = "EKS cluster that gets the EFS CSI driver add-on"
  type        = string
}

variable "oidc_provider_arn" {
  description = "IAM OIDC provider of the cluster (IRSA of the CSI controller)"
  type        = string
}

variable "oidc_issuer" {
  description = "issuer without https:// (the condition-key prefix)"
  type        = string
}

resource "aws_efs_file_system" "this" {
  creation_token   = "${var.name}-home"
  encrypted        = true
  kms_key_id       = var.kms_key_arn
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"
  tags             = { Name = "${var.name}-home" }

  lifecycle_policy {
    transition_to_ia = "AFTER_30_DAYS"
  }
}

resource "aws_efs_backup_policy" "this" {
  file_system_id = aws_efs_file_system.this.id
  backup_policy {
    status = "ENABLED"
  }
}

resource "aws_security_group" "this" {
  name        = "${var.name}-efs"
  description = "NFS to the platform home: from the EKS nodes only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  security_group_id            = aws_security_group.this.id
  description                  = "NFS from the EKS nodes"
  referenced_security_group_id = var.client_sg_id
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
}

resource "aws_efs_mount_target" "this" {
  count           = length(var.subnet_ids)
  file_system_id  = aws_efs_file_system.this.id
  subnet_id       = var.subnet_ids[count.index]
  security_groups = [aws_security_group.this.id]
}

# --- the EFS CSI driver, its controller on an IRSA role with AWS's managed policy for it

data "aws_iam_policy_document" "csi_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = ["system:serviceaccount:kube-system:efs-csi-controller-sa"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "csi" {
  name               = "${var.name}-efs-csi"
  assume_role_policy = data.aws_iam_policy_document.csi_assume.json
}

resource "aws_iam_role_policy_attachment" "csi" {
  role       = aws_iam_role.csi.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy"
}

resource "aws_eks_addon" "efs_csi" {
  cluster_name             = var.cluster_name
  addon_name               = "aws-efs-csi-driver"
  service_account_role_arn = aws_iam_role.csi.arn
  depends_on               = [aws_iam_role_policy_attachment.csi]
}

output "file_system_id" {
  description = "EFS file system id: the fileSystemId of deploy/k8s/shared-home.yaml's StorageClass"
  value       = aws_efs_file_system.this.id
}
