"""audit-ray: a Ray executor plugin for audit."""
