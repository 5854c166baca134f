"""s3edit: edit facial attributes in real videos while keeping identity, motion,
background and audio (S3Editor on the Diffusion Video Autoencoder)."""

__version__ = "0.1.0"
