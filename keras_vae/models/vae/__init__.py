"""The VAE kind (Kingma & Welling 2014) and its conditional form (Sohn et al. 2015)."""
