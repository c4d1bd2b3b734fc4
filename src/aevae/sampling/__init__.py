"""Codes for generation and the latent-space helpers the callbacks and commands share:
encoding in batches, interpolation paths, and the samplers (`sampler=prior|gaussian|gmm`)."""
