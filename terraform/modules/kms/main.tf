# One customer-managed key (rotated yearly) for the platform's data at rest. The key policy keeps
# the account in control (IAM policies grant use) and lets CloudWatch Logs of this account and
# region encrypt the VPC flow logs and the EKS control-plane logs.

variable "name" {
  description = "resource name prefix"
  type        = string
}

variable "region" {
  description = "AWS region (CloudWatch Logs' service principal is regional)"
  type        = string
}

variable "account_id" {
  description = "AWS account that owns the key"
  type        = string
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:the key policy must name the account root so that IAM policies can grant use; its scope is this one key
  #checkov:skip=CKV_AWS_111:same: the account-root statement of a key policy applies to this key only
  #checkov:skip=CKV_AWS_356:in a key policy "*" is the key itself
  statement {
    sid       = "AccountAdmin"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${var.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${var.region}:${var.account_id}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: data at rest (S3, RDS, ElastiCache, ECR, EKS secrets, logs)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

output "key_arn" {
  description = "ARN of the platform's KMS key"
  value       = aws_kms_key.this.arn
}
