variable "twin_name" {
  description = "Name of the digital twin; every object's name starts with it."
  type        = string
  default     = "factory-7"
}

variable "production_lines" {
  description = "One twin instance per production line."
  type        = set(string)
  default     = ["line-a", "line-b"]
}

variable "dashboard_title" {
  description = "Suffix of the Grafana instance's name. Changing it replaces that one object."
  type        = string
  default     = "operations"
}

variable "base_delay_ms" {
  description = "Every create/update/destroy delay is a multiple of this. 1000 makes a deploy take about 10 s; tests set it near 0."
  type        = number
  default     = 1000
}

variable "fail_on_create" {
  description = "Keys of objects whose creation should fail: iot_hub, telemetry_db, registry_db, ingest_fn, alerts_fn, aggregate_fn, grafana, dashboards, twin_model, line, twin."
  type        = set(string)
  default     = []
}

variable "fail_on_destroy" {
  description = "Keys of objects whose destruction should fail (same keys as fail_on_create)."
  type        = set(string)
  default     = []
}
