# A digital twin on Azure, from terrastream's bundled template: an IoT hub, a PostgreSQL
# flexible server, a Linux function app, Azure Managed Grafana and an Azure Digital Twins
# instance. A starting point to edit, not a finished design. Deploying it needs Azure
# credentials (ARM_* in --credentials-file) and a provider registry terraform can reach.

terraform {
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5"
    }
  }
}

provider "azurerm" {
  features {}
}

locals {
  name = var.twin_name
  # What each size of the provider catalog means here.
  sizes = {
    small  = { hub_sku = "S1", hub_units = 1, db_sku = "B_Standard_B1ms", db_storage_mb = 32768 }
    medium = { hub_sku = "S1", hub_units = 2, db_sku = "GP_Standard_D2ds_v5", db_storage_mb = 131072 }
    large  = { hub_sku = "S2", hub_units = 2, db_sku = "MO_Standard_E4ds_v5", db_storage_mb = 524288 }
  }
  size = local.sizes[var.size]
  # Storage account names: 3-24 lowercase letters and digits.
  storage_name = substr(replace(lower("${local.name}twin"), "/[^a-z0-9]/", ""), 0, 24)
}

resource "azurerm_resource_group" "twin" {
  name     = "${local.name}-twin"
  location = var.region
}

resource "azurerm_iothub" "hub" {
  name                = "${local.name}-hub"
  resource_group_name = azurerm_resource_group.twin.name
  location            = azurerm_resource_group.twin.location

  sku {
    name     = local.size.hub_sku
    capacity = local.size.hub_units
  }
}

resource "random_password" "database" {
  length  = 32
  special = false
}

resource "azurerm_postgresql_flexible_server" "telemetry" {
  name                   = "${local.name}-telemetry"
  resource_group_name    = azurerm_resource_group.twin.name
  location               = azurerm_resource_group.twin.location
  version                = "16"
  sku_name               = local.size.db_sku
  storage_mb             = local.size.db_storage_mb
  administrator_login    = "twin"
  administrator_password = random_password.database.result
}

resource "azurerm_storage_account" "functions" {
  name                     = local.storage_name
  resource_group_name      = azurerm_resource_group.twin.name
  location                 = azurerm_resource_group.twin.location
  account_tier             = "Standard"
  account_replication_type = "LRS"
}

resource "azurerm_service_plan" "functions" {
  name                = "${local.name}-functions"
  resource_group_name = azurerm_resource_group.twin.name
  location            = azurerm_resource_group.twin.location
  os_type             = "Linux"
  sku_name            = "Y1"
}

resource "azurerm_linux_function_app" "ingest" {
  name                       = "${local.name}-ingest"
  resource_group_name        = azurerm_resource_group.twin.name
  location                   = azurerm_resource_group.twin.location
  service_plan_id            = azurerm_service_plan.functions.id
  storage_account_name       = azurerm_storage_account.functions.name
  storage_account_access_key = azurerm_storage_account.functions.primary_access_key

  site_config {
    application_stack {
      python_version = "3.12"
    }
  }

  app_settings = {
    IOTHUB_NAME       = azurerm_iothub.hub.name
    DATABASE_HOSTNAME = azurerm_postgresql_flexible_server.telemetry.fqdn
  }
}

resource "azurerm_dashboard_grafana" "operations" {
  name                  = substr("${local.name}-ops", 0, 23)
  resource_group_name   = azurerm_resource_group.twin.name
  location              = azurerm_resource_group.twin.location
  grafana_major_version = 11

  identity {
    type = "SystemAssigned"
  }
}

resource "azurerm_digital_twins_instance" "twin" {
  name                = "${local.name}-twin"
  resource_group_name = azurerm_resource_group.twin.name
  location            = azurerm_resource_group.twin.location
}
