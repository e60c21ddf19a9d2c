# The platform's S3 buckets: run artifacts (MLP_STORAGE_URI), the DVC remote (MLP_DVC_REMOTE) and
# MLflow's artifacts (MLP_MLFLOW_ARTIFACT_URI). Each is versioned, SSE-KMS encrypted with the
# platform key (bucket keys on), closed to the public, TLS-only, owner-enforced (no ACLs), with
# server access logs to a log bucket. Old noncurrent versions expire after a retention period.

variable "name" {
  description = "bucket name prefix (bucket names are global: include the environment)"
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key of the buckets"
  type        = string
}

variable "noncurrent_version_days" {
  description = "days an overwritten or deleted object version is kept"
  type        = number
  default     = 90
}

locals {
  uses = ["runs", "dvc", "mlflow"]
}

resource "aws_s3_bucket" "data" {
  #checkov:skip=CKV_AWS_144:cross-region replication is a disaster-recovery choice left to the operator (versioning + KMS are on)
  #checkov:skip=CKV2_AWS_62:no consumer of S3 event notifications; the pipeline is driven by Airflow
  for_each = toset(local.uses)
  bucket   = "${var.name}-${each.key}"
}

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_144:cross-region replication is a disaster-recovery choice left to the operator
  #checkov:skip=CKV2_AWS_62:no consumer of S3 event notifications for access logs
  #checkov:skip=CKV_AWS_18:this is the access-log bucket itself; logging it into itself would loop
  bucket = "${var.name}-s3-access-logs"
}

locals {
  # every bucket, the log bucket included, gets the same controls; checkov's graph follows a
  # for_each over this static map (it did not follow one over a merge() of resources)
  all = {
    runs   = aws_s3_bucket.data["runs"]
    dvc    = aws_s3_bucket.data["dvc"]
    mlflow = aws_s3_bucket.data["mlflow"]
    logs   = aws_s3_bucket.logs
  }
}

resource "aws_s3_bucket_ownership_controls" "all" {
  for_each = local.all
  bucket   = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "all" {
  for_each                = local.all
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "all" {
  for_each = local.all
  bucket   = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "all" {
  for_each = local.all
  bucket   = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "all" {
  for_each = local.all
  bucket   = each.value.id
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
  depends_on = [aws_s3_bucket_versioning.all]
}

data "aws_iam_policy_document" "tls_only" {
  for_each = local.all
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "all" {
  for_each   = local.all
  bucket     = each.value.id
  policy     = data.aws_iam_policy_document.tls_only[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.all]
}

resource "aws_s3_bucket_logging" "data" {
  for_each      = toset(local.uses)
  bucket        = aws_s3_bucket.data[each.key].id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "${each.key}/"
}

output "bucket_names_by_use" {
  description = "bucket name per use: runs, dvc, mlflow"
  value       = { for use, bucket in aws_s3_bucket.data : use => bucket.bucket }
}

output "bucket_arns_by_use" {
  description = "bucket ARN per use: runs, dvc, mlflow"
  value       = { for use, bucket in aws_s3_bucket.data : use => bucket.arn }
}

output "bucket_arns" {
  description = "ARNs of the data buckets (not the log bucket)"
  value       = [for bucket in aws_s3_bucket.data : bucket.arn]
}
