"""audit-stable-diffusion: Stable Diffusion v1.x folders as audit targets (latent space)."""
