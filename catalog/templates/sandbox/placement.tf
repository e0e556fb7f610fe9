# Added by terrastream's sandbox template to the demo twin's files: the catalog's region and
# size, as for a cloud twin. The sandbox runs on this machine, so they change nothing.

variable "region" {
  description = "Region from the provider catalog; the sandbox has one, local."
  type        = string
  default     = "local"
}

variable "size" {
  description = "Size from the provider catalog; the sandbox has one, local."
  type        = string
  default     = "local"
}

output "placement" {
  description = "Region and size this twin was created for."
  value       = "${var.region}/${var.size}"
}
