# A digital twin on Google Cloud, from terrastream's bundled template: a Pub/Sub topic for
# telemetry (Cloud IoT Core was retired in 2023; devices publish through a broker or the
# Pub/Sub API), a Cloud SQL database, a Cloud Function, Grafana on Cloud Run and a Firestore
# database for the twin's model. A starting point to edit, not a finished design. Deploying it
# needs Google credentials (GOOGLE_* in --credentials-file) and a provider registry terraform
# can reach.

terraform {
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

locals {
  name = var.twin_name
  # What each size of the provider catalog means here.
  sizes = {
    small  = { sql_tier = "db-f1-micro", function_memory = "256M", grafana_instances = 1 }
    medium = { sql_tier = "db-custom-2-7680", function_memory = "512M", grafana_instances = 1 }
    large  = { sql_tier = "db-custom-4-26624", function_memory = "1Gi", grafana_instances = 2 }
  }
  size = local.sizes[var.size]
}

resource "google_pubsub_topic" "telemetry" {
  name = "${local.name}-telemetry"
}

resource "google_sql_database_instance" "telemetry" {
  name                = "${local.name}-telemetry"
  database_version    = "POSTGRES_16"
  region              = var.region
  deletion_protection = false

  settings {
    tier = local.size.sql_tier
  }
}

resource "google_storage_bucket" "functions" {
  name                        = "${var.project}-${local.name}-functions"
  location                    = var.region
  uniform_bucket_level_access = true
  force_destroy               = true
}

data "archive_file" "ingest" {
  type        = "zip"
  output_path = "${path.module}/ingest.zip"

  source {
    filename = "main.py"
    content  = <<-PY
      def ingest(event, context=None):
          print(event)
    PY
  }

  source {
    filename = "requirements.txt"
    content  = "functions-framework>=3\n"
  }
}

resource "google_storage_bucket_object" "ingest" {
  name   = "ingest-${data.archive_file.ingest.output_md5}.zip"
  bucket = google_storage_bucket.functions.name
  source = data.archive_file.ingest.output_path
}

resource "google_cloudfunctions2_function" "ingest" {
  name     = "${local.name}-ingest"
  location = var.region

  build_config {
    runtime     = "python312"
    entry_point = "ingest"
    source {
      storage_source {
        bucket = google_storage_bucket.functions.name
        object = google_storage_bucket_object.ingest.name
      }
    }
  }

  service_config {
    available_memory   = local.size.function_memory
    max_instance_count = 10
  }

  event_trigger {
    event_type   = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic = google_pubsub_topic.telemetry.id
  }
}

resource "google_cloud_run_v2_service" "grafana" {
  name                = "${local.name}-grafana"
  location            = var.region
  deletion_protection = false

  template {
    scaling {
      min_instance_count = local.size.grafana_instances
    }
    containers {
      image = "docker.io/grafana/grafana:11.3.0"
      ports {
        container_port = 3000
      }
    }
  }
}

resource "google_firestore_database" "twin" {
  name        = "${local.name}-twin"
  location_id = var.region
  type        = "FIRESTORE_NATIVE"
}
