variable "twin_name" {
  description = "Name of the digital twin; every resource's name starts with it."
  type        = string
  default     = "factory-7"
}

variable "region" {
  description = "AWS region, one of the provider catalog's (GET /providers/aws)."
  type        = string
}

variable "size" {
  description = "Size from the provider catalog: small, medium or large."
  type        = string

  validation {
    condition     = contains(["small", "medium", "large"], var.size)
    error_message = "The size must be small, medium or large."
  }
}
