"""The VQ-VAE kind (van den Oord et al. 2017) and its gated PixelCNN code prior."""
