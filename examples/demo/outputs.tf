output "iot_hub_endpoint" {
  description = "Where devices send telemetry."
  value       = sandbox_resource.iot_hub.endpoint
}

output "grafana_url" {
  description = "Dashboards of the twin."
  value       = sandbox_resource.grafana.endpoint
}

output "database_endpoint" {
  description = "Telemetry database."
  value       = sandbox_resource.telemetry_db.endpoint
}

output "database_secret" {
  description = "Telemetry database access secret."
  value       = sandbox_resource.telemetry_db.secret
  sensitive   = true
}

output "twin_id" {
  description = "Sandbox id of the twin object."
  value       = sandbox_resource.twin.id
}
