"""autointerp: explain and score every latent of a sparse autoencoder or transcoder."""

__version__ = "0.1.0"
