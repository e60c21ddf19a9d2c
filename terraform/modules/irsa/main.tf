# IAM roles for Kubernetes service accounts (IRSA). Each role can be assumed only by its one
# service account (the OIDC token's sub and aud are both pinned), and may only list, read, write
# and delete objects of the buckets it is given, using the platform key through S3. No other AWS
# API: the nodes' role is out of reach of pods (IMDSv2 hop limit 1, modules/eks).

variable "name" {
  description = "role name prefix"
  type        = string
}

variable "oidc_provider_arn" {
  description = "IAM OIDC provider of the EKS cluster"
  type        = string
}

variable "oidc_issuer" {
  description = "issuer without https:// (the condition-key prefix)"
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key of the buckets"
  type        = string
}

variable "service_accounts" {
  description = "role key -> {namespace, service_account, bucket_arns}"
  type = map(object({
    namespace       = string
    service_account = string
    bucket_arns     = list(string)
  }))
}

data "aws_region" "current" {}

data "aws_iam_policy_document" "assume" {
  for_each = var.service_accounts
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${each.value.namespace}:${each.value.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "access" {
  for_each = var.service_accounts
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = each.value.bucket_arns
  }
  statement {
    sid       = "Objects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [for arn in each.value.bucket_arns : "${arn}/*"]
  }
  statement {
    sid       = "BucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.current.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  for_each           = var.service_accounts
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume[each.key].json
}

resource "aws_iam_role_policy" "this" {
  for_each = var.service_accounts
  name     = "s3-buckets"
  role     = aws_iam_role.this[each.key].id
  policy   = data.aws_iam_policy_document.access[each.key].json
}

output "role_arns" {
  description = "role ARN per key: annotate the service account with eks.amazonaws.com/role-arn"
  value       = { for key, role in aws_iam_role.this : key => role.arn }
}
