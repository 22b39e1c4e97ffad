"""audit-dit: class-conditional Diffusion Transformers (diffusers DiTPipeline folders) as audit targets."""
