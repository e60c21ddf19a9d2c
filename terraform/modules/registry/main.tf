# ECR repositories of the platform's images (docker/airflow.Dockerfile, docker/trainer.Dockerfile):
# immutable tags (a tag names one build forever), scanned on push, KMS-encrypted, untagged images
# expired after a week.

variable "name" {
  description = "repository name prefix"
  type        = string
}

variable "repositories" {
  description = "repository names under the prefix"
  type        = list(string)
}

variable "kms_key_arn" {
  description = "KMS key of the repositories"
  type        = string
}

resource "aws_ecr_repository" "this" {
  for_each             = toset(var.repositories)
  name                 = "${var.name}/${each.key}"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

resource "aws_ecr_lifecycle_policy" "this" {
  for_each   = aws_ecr_repository.this
  repository = each.value.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "expire untagged images after 7 days"
      selection = {
        tagStatus   = "untagged"
        countType   = "sinceImagePushed"
        countUnit   = "days"
        countNumber = 7
      }
      action = { type = "expire" }
    }]
  })
}

output "repository_urls" {
  description = "repository URL per image (airflow, trainer)"
  value       = { for key, repo in aws_ecr_repository.this : key => repo.repository_url }
}
