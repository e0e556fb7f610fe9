output "iot_hub_hostname" {
  description = "Where devices send telemetry."
  value       = azurerm_iothub.hub.hostname
}

output "database_endpoint" {
  description = "Telemetry database."
  value       = azurerm_postgresql_flexible_server.telemetry.fqdn
}

output "database_password" {
  description = "Password of the database's administrator."
  value       = random_password.database.result
  sensitive   = true
}

output "grafana_url" {
  description = "Dashboards of the twin."
  value       = azurerm_dashboard_grafana.operations.endpoint
}

output "twin_endpoint" {
  description = "Azure Digital Twins endpoint."
  value       = "https://${azurerm_digital_twins_instance.twin.host_name}"
}
