"""Models: the DDIM prior and the perceptual backbones, one process, one device."""
