output "telemetry_topic" {
  description = "Where devices publish telemetry."
  value       = google_pubsub_topic.telemetry.id
}

output "database_connection" {
  description = "Telemetry database connection name."
  value       = google_sql_database_instance.telemetry.connection_name
}

output "grafana_url" {
  description = "Dashboards of the twin."
  value       = google_cloud_run_v2_service.grafana.uri
}

output "twin_database" {
  description = "Firestore database holding the twin's model."
  value       = google_firestore_database.twin.name
}
