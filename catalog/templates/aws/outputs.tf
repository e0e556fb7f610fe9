output "iot_topic" {
  description = "Where devices publish telemetry."
  value       = "${var.twin_name}/telemetry"
}

output "database_endpoint" {
  description = "Telemetry database."
  value       = aws_db_instance.telemetry.endpoint
}

output "grafana_url" {
  description = "Dashboards of the twin."
  value       = "https://${aws_grafana_workspace.operations.endpoint}"
}

output "twin_workspace" {
  description = "IoT TwinMaker workspace of the twin."
  value       = awscc_iottwinmaker_workspace.twin.workspace_id
}
