# The demo digital twin: an IoT hub feeding functions, two databases, Grafana, and the twin
# itself with one instance per production line. 12 objects; with base_delay_ms = 1000 and
# terraform's default parallelism (10) a deploy takes about 10 s along its longest chain
# (telemetry_db 4 s -> grafana 3 s -> dashboards 1 s -> twin 2 s).
#
# No backend and no provider directory here: the gateway adds its own backend override and
# passes SANDBOX_DIR in terraform's environment.

terraform {
  required_providers {
    sandbox = {
      source  = "terrastream.local/terrastream/sandbox"
      version = ">= 0.1.0"
    }
  }
}

locals {
  ms = var.base_delay_ms
}

resource "sandbox_resource" "iot_hub" {
  name = "${var.twin_name}-hub"
  kind = "iot_hub"
  properties = {
    sku        = "S1"
    partitions = "4"
  }
  create_delay_ms  = 3 * local.ms
  update_delay_ms  = 1 * local.ms
  destroy_delay_ms = 1 * local.ms
  fail_on_create   = contains(var.fail_on_create, "iot_hub")
  fail_on_destroy  = contains(var.fail_on_destroy, "iot_hub")
}

resource "sandbox_resource" "telemetry_db" {
  name = "${var.twin_name}-telemetry"
  kind = "database"
  properties = {
    engine    = "timeseries"
    retention = "30d"
  }
  create_delay_ms  = 4 * local.ms
  update_delay_ms  = 2 * local.ms
  destroy_delay_ms = 1 * local.ms
  fail_on_create   = contains(var.fail_on_create, "telemetry_db")
  fail_on_destroy  = contains(var.fail_on_destroy, "telemetry_db")
}

resource "sandbox_resource" "registry_db" {
  name = "${var.twin_name}-registry"
  kind = "database"
  properties = {
    engine = "postgres"
  }
  create_delay_ms  = 2 * local.ms
  destroy_delay_ms = 1 * local.ms
  fail_on_create   = contains(var.fail_on_create, "registry_db")
  fail_on_destroy  = contains(var.fail_on_destroy, "registry_db")
}

resource "sandbox_resource" "ingest_fn" {
  name = "${var.twin_name}-ingest"
  kind = "function"
  properties = {
    source = sandbox_resource.iot_hub.endpoint
    sink   = sandbox_resource.telemetry_db.endpoint
  }
  create_delay_ms  = 2 * local.ms
  update_delay_ms  = 1 * local.ms
  destroy_delay_ms = 1 * local.ms
  fail_on_create   = contains(var.fail_on_create, "ingest_fn")
  fail_on_destroy  = contains(var.fail_on_destroy, "ingest_fn")
}

resource "sandbox_resource" "alerts_fn" {
  name = "${var.twin_name}-alerts"
  kind = "function"
  properties = {
    source = sandbox_resource.iot_hub.endpoint
  }
  create_delay_ms  = 2 * local.ms
  destroy_delay_ms = 1 * local.ms
  fail_on_create   = contains(var.fail_on_create, "alerts_fn")
  fail_on_destroy  = contains(var.fail_on_destroy, "alerts_fn")
}

resource "sandbox_resource" "aggregate_fn" {
  name = "${var.twin_name}-aggregate"
  kind = "function"
  properties = {
    database = sandbox_resource.telemetry_db.endpoint
  }
  create_delay_ms  = 2 * local.ms
  destroy_delay_ms = 1 * local.ms
  fail_on_create   = contains(var.fail_on_create, "aggregate_fn")
  fail_on_destroy  = contains(var.fail_on_destroy, "aggregate_fn")
}

resource "sandbox_resource" "grafana" {
  name = "${var.twin_name}-${var.dashboard_title}"
  kind = "grafana"
  properties = {
    datasource = sandbox_resource.telemetry_db.endpoint
  }
  create_delay_ms  = 3 * local.ms
  destroy_delay_ms = 1 * local.ms
  fail_on_create   = contains(var.fail_on_create, "grafana")
  fail_on_destroy  = contains(var.fail_on_destroy, "grafana")
}

resource "sandbox_resource" "twin_model" {
  name = "${var.twin_name}-model"
  kind = "twin"
  properties = {
    registry = sandbox_resource.registry_db.endpoint
    schema   = "dtdl-v3"
  }
  create_delay_ms  = 2 * local.ms
  destroy_delay_ms = 1 * local.ms
  fail_on_create   = contains(var.fail_on_create, "twin_model")
  fail_on_destroy  = contains(var.fail_on_destroy, "twin_model")
}

resource "sandbox_resource" "line" {
  for_each = var.production_lines

  name = "${var.twin_name}-${each.key}"
  kind = "twin"
  properties = {
    model  = sandbox_resource.twin_model.id
    ingest = sandbox_resource.ingest_fn.endpoint
  }
  create_delay_ms  = 2 * local.ms
  update_delay_ms  = 1 * local.ms
  destroy_delay_ms = 1 * local.ms
  fail_on_create   = contains(var.fail_on_create, "line")
  fail_on_destroy  = contains(var.fail_on_destroy, "line")
}

resource "sandbox_resource" "dashboards" {
  name = "${var.twin_name}-dashboards"
  kind = "grafana"
  properties = {
    grafana = sandbox_resource.grafana.endpoint
    model   = sandbox_resource.twin_model.id
  }
  create_delay_ms  = 1 * local.ms
  destroy_delay_ms = 1 * local.ms
  fail_on_create   = contains(var.fail_on_create, "dashboards")
  fail_on_destroy  = contains(var.fail_on_destroy, "dashboards")
}

resource "sandbox_resource" "twin" {
  name = var.twin_name
  kind = "twin"
  properties = {
    model      = sandbox_resource.twin_model.id
    dashboards = sandbox_resource.dashboards.endpoint
  }
  create_delay_ms  = 2 * local.ms
  destroy_delay_ms = 1 * local.ms
  fail_on_create   = contains(var.fail_on_create, "twin")
  fail_on_destroy  = contains(var.fail_on_destroy, "twin")

  # The twin goes live only once every part of it is there.
  depends_on = [
    sandbox_resource.line,
    sandbox_resource.alerts_fn,
    sandbox_resource.aggregate_fn,
  ]
}
