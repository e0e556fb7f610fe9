# A digital twin on AWS, from terrastream's bundled template: an IoT rule feeding a Lambda
# function, a PostgreSQL database, a Managed Grafana workspace and an IoT TwinMaker workspace.
# A starting point to edit, not a finished design. Deploying it needs AWS credentials
# (--credentials-file) and a provider registry terraform can reach.

terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
    awscc = {
      source  = "hashicorp/awscc"
      version = ">= 1.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4"
    }
  }
}

provider "aws" {
  region = var.region
}

provider "awscc" {
  region = var.region
}

locals {
  name = var.twin_name
  # What each size of the provider catalog means here.
  sizes = {
    small  = { db_class = "db.t4g.micro", db_storage_gb = 20, function_memory_mb = 256 }
    medium = { db_class = "db.m6g.large", db_storage_gb = 100, function_memory_mb = 512 }
    large  = { db_class = "db.r6g.xlarge", db_storage_gb = 500, function_memory_mb = 1024 }
  }
  size = local.sizes[var.size]
}

# Ingest: devices publish to <twin>/telemetry; a topic rule hands each message to a function.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ingest" {
  name               = "${local.name}-ingest"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

resource "aws_iam_role_policy_attachment" "ingest_logs" {
  role       = aws_iam_role.ingest.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

data "archive_file" "ingest" {
  type        = "zip"
  output_path = "${path.module}/ingest.zip"

  source {
    filename = "index.py"
    content  = <<-PY
      def handler(event, context):
          print(event)
          return {"ok": True}
    PY
  }
}

resource "aws_lambda_function" "ingest" {
  function_name    = "${local.name}-ingest"
  role             = aws_iam_role.ingest.arn
  runtime          = "python3.12"
  handler          = "index.handler"
  filename         = data.archive_file.ingest.output_path
  source_code_hash = data.archive_file.ingest.output_base64sha256
  memory_size      = local.size.function_memory_mb
  timeout          = 10
}

resource "aws_iot_topic_rule" "telemetry" {
  name        = replace("${local.name}_telemetry", "-", "_")
  enabled     = true
  sql         = "SELECT * FROM '${local.name}/telemetry'"
  sql_version = "2016-03-23"

  lambda {
    function_arn = aws_lambda_function.ingest.arn
  }
}

resource "aws_lambda_permission" "iot" {
  statement_id  = "AllowIotTopicRule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.ingest.function_name
  principal     = "iot.amazonaws.com"
  source_arn    = aws_iot_topic_rule.telemetry.arn
}

# Telemetry database; RDS keeps the master password in Secrets Manager.

resource "aws_db_instance" "telemetry" {
  identifier                  = "${local.name}-telemetry"
  engine                      = "postgres"
  instance_class              = local.size.db_class
  allocated_storage           = local.size.db_storage_gb
  db_name                     = "telemetry"
  username                    = "twin"
  manage_master_user_password = true
  skip_final_snapshot         = true
}

# Dashboards.

data "aws_iam_policy_document" "grafana_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["grafana.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "grafana" {
  name               = "${local.name}-grafana"
  assume_role_policy = data.aws_iam_policy_document.grafana_assume.json
}

resource "aws_grafana_workspace" "operations" {
  name                     = "${local.name}-operations"
  account_access_type      = "CURRENT_ACCOUNT"
  authentication_providers = ["AWS_SSO"]
  permission_type          = "SERVICE_MANAGED"
  role_arn                 = aws_iam_role.grafana.arn
  data_sources             = ["CLOUDWATCH"]
}

# The twin: an IoT TwinMaker workspace keeping its models in a bucket.

resource "aws_s3_bucket" "twin" {
  bucket_prefix = "${local.name}-twin-"
}

data "aws_iam_policy_document" "twinmaker_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["iottwinmaker.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "twinmaker" {
  name               = "${local.name}-twinmaker"
  assume_role_policy = data.aws_iam_policy_document.twinmaker_assume.json
}

resource "aws_iam_role_policy" "twinmaker_bucket" {
  role = aws_iam_role.twinmaker.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:GetBucketLocation"]
      Resource = [aws_s3_bucket.twin.arn, "${aws_s3_bucket.twin.arn}/*"]
    }]
  })
}

resource "awscc_iottwinmaker_workspace" "twin" {
  workspace_id = "${local.name}-twin"
  role         = aws_iam_role.twinmaker.arn
  s3_location  = aws_s3_bucket.twin.arn
}
